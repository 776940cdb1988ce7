-- The first schema of nvent's Postgres store: event streams, documents and
-- key-value entries. Every text column that is compared or sorted uses the
-- "C" collation, so that ids order byte-wise as in the other adapters.

-- +goose Up

-- One row per subject, holding its last seq. Appends to a subject run one at
-- a time (under a transaction-scoped advisory lock on the subject, taken
-- before the transaction writes anything) and move last_seq in the same
-- statement that inserts their events: seq is gapless.
CREATE TABLE streams (
    subject  text COLLATE "C" PRIMARY KEY,
    last_seq bigint NOT NULL CHECK (last_seq >= 0)
);

-- The event log, and the outbox: a relay reads it in commit order with a
-- (tx_id, position) cursor below pg_snapshot_xmin(pg_current_snapshot()),
-- because position (a sequence) is handed out in insert order, not commit
-- order. An append gets its transaction id only once it holds its subject's
-- lock, so within a subject tx_id order is seq order. data is json, not
-- jsonb, so that it reads back byte for byte.
CREATE TABLE events (
    position  bigserial PRIMARY KEY,
    tx_id     xid8 NOT NULL DEFAULT pg_current_xact_id(),
    subject   text COLLATE "C" NOT NULL,
    seq       bigint NOT NULL CHECK (seq > 0),
    id        text COLLATE "C" NOT NULL,
    type      text COLLATE "C" NOT NULL,
    run_id    text COLLATE "C",
    flow_name text COLLATE "C",
    step_name text COLLATE "C",
    step_id   text COLLATE "C",
    attempt   bigint NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    data      json NOT NULL,
    ts        timestamptz NOT NULL,
    CONSTRAINT events_subject_seq_key UNIQUE (subject, seq),
    -- Idempotency by event id, whatever the process remembers.
    CONSTRAINT events_subject_id_key UNIQUE (subject, id)
);

CREATE INDEX events_tx_id_position_idx ON events (tx_id, position);

-- Documents, versioned for optimistic updates: version starts at 1 and grows
-- by one with every save.
CREATE TABLE documents (
    collection text COLLATE "C" NOT NULL,
    id         text COLLATE "C" NOT NULL,
    version    bigint NOT NULL CHECK (version > 0),
    data       json NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (collection, id)
);

-- Key-value entries. A row whose expires_at has passed does not exist for
-- any read; it is overwritten or deleted lazily.
CREATE TABLE kv (
    key        text COLLATE "C" PRIMARY KEY,
    value      json NOT NULL,
    expires_at timestamptz,
    updated_at timestamptz NOT NULL
);

-- For a sweeper that deletes expired entries in bulk.
CREATE INDEX kv_expires_at_idx ON kv (expires_at) WHERE expires_at IS NOT NULL;

-- +goose Down

DROP TABLE kv;
DROP TABLE documents;
DROP TABLE events;
DROP TABLE streams;
