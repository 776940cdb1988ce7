-- The SQLite schema of the nvent store. Timestamps are integer Unix
-- milliseconds (UTC); JSON values are text, compacted by the domain layer.

-- +goose Up

-- streams holds the current seq of every subject that has events. An append
-- reads and bumps last_seq inside its write transaction.
CREATE TABLE streams (
    subject  TEXT    NOT NULL PRIMARY KEY,
    last_seq INTEGER NOT NULL
) STRICT;

-- events is the log. position grows with every insert and, because SQLite
-- serialises writers, in commit order too; AUTOINCREMENT keeps it from ever
-- being reused. (subject, id) makes appends idempotent across restarts.
CREATE TABLE events (
    position  INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    subject   TEXT    NOT NULL REFERENCES streams (subject),
    seq       INTEGER NOT NULL,
    id        TEXT    NOT NULL,
    type      TEXT    NOT NULL,
    run_id    TEXT,
    flow_name TEXT,
    step_name TEXT,
    step_id   TEXT,
    attempt   INTEGER,
    data      TEXT    NOT NULL,
    ts        INTEGER NOT NULL,
    UNIQUE (subject, seq),
    UNIQUE (subject, id)
) STRICT;

CREATE TABLE documents (
    collection TEXT    NOT NULL,
    id         TEXT    NOT NULL,
    version    INTEGER NOT NULL,
    data       TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (collection, id)
) STRICT;

-- kv rows whose expires_at has passed do not exist for readers; writers
-- delete them as they meet them, and sets sweep a few through the index.
CREATE TABLE kv (
    key        TEXT NOT NULL PRIMARY KEY,
    value      TEXT NOT NULL,
    expires_at INTEGER
) STRICT;

CREATE INDEX kv_expires_at ON kv (expires_at) WHERE expires_at IS NOT NULL;

-- +goose Down
DROP INDEX kv_expires_at;
DROP TABLE kv;
DROP TABLE documents;
DROP TABLE events;
DROP TABLE streams;
