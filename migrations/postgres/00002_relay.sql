-- The durable relay: change records for documents and keys (the outbox of
-- what is not an event), the relay's checkpoints, and a wake-up signal.

-- +goose Up

-- One row per document or key change, written in the same statement or
-- transaction as the change itself. Read by the relay in commit order with
-- the same (tx_id, position) cursor as events, and deleted once relayed:
-- unlike events, these rows are only an outbox.
CREATE TABLE changes (
    position   bigserial PRIMARY KEY,
    tx_id      xid8 NOT NULL DEFAULT pg_current_xact_id(),
    id         text COLLATE "C" NOT NULL,              -- the change id, the stream message's eventId
    kind       text COLLATE "C" NOT NULL CHECK (kind IN ('save', 'delete', 'kv.set', 'kv.delete')),
    collection text COLLATE "C",                        -- save, delete
    doc_id     text COLLATE "C",                        -- save, delete
    key        text COLLATE "C",                        -- kv.set, kv.delete
    body       json,                                    -- the document (save) or the entry (kv.set)
    at         timestamptz NOT NULL
);

CREATE INDEX changes_tx_id_position_idx ON changes (tx_id, position);

-- Where the relay has got to in each table: everything at or below
-- (tx_id, position) has been acknowledged by the stream.
CREATE TABLE relay_checkpoints (
    name       text COLLATE "C" PRIMARY KEY,           -- 'events' or 'changes'
    tx_id      xid8 NOT NULL,
    position   bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Wakes the relay (LISTEN nvent_relay) when a transaction that wrote events
-- or changes commits; the payload names the schema, so that relays of other
-- schemas in the same database ignore it. Notifications are delivered at
-- commit and folded per transaction.
-- +goose StatementBegin
CREATE FUNCTION nvent_notify_relay() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('nvent_relay', current_schema());
    RETURN NULL;
END
$$;
-- +goose StatementEnd

CREATE TRIGGER events_notify_relay AFTER INSERT ON events
    FOR EACH STATEMENT EXECUTE FUNCTION nvent_notify_relay();
CREATE TRIGGER changes_notify_relay AFTER INSERT ON changes
    FOR EACH STATEMENT EXECUTE FUNCTION nvent_notify_relay();

-- +goose Down

DROP TRIGGER changes_notify_relay ON changes;
DROP TRIGGER events_notify_relay ON events;
DROP FUNCTION nvent_notify_relay();
DROP TABLE relay_checkpoints;
DROP TABLE changes;
