-- The outbox of the SQLite store for a relay: change records for documents
-- and keys (what is not an event) and the relay's checkpoints. Times are
-- integer Unix milliseconds (UTC), as in 00001.

-- +goose Up

-- One row per document or key change, inserted in the write transaction of
-- the change itself, so it commits if and only if the change does. Writers
-- are serialised and position is assigned inside their transaction, so
-- position order is commit order, as for events; AUTOINCREMENT keeps a
-- position from being reused after relayed rows are deleted (unlike events,
-- these rows are only an outbox).
CREATE TABLE changes (
    position   INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    id         TEXT    NOT NULL,   -- the change id, the stream message's eventId
    kind       TEXT    NOT NULL CHECK (kind IN ('save', 'delete', 'kv.set', 'kv.delete')),
    collection TEXT,               -- save, delete
    doc_id     TEXT,               -- save, delete
    key        TEXT,               -- kv.set, kv.delete
    body       TEXT,               -- the document (save) or the entry (kv.set), as JSON
    at         INTEGER NOT NULL
) STRICT;

-- Where the relay has got to in each table ('events' or 'changes'):
-- everything at or below position has been acknowledged by the stream.
CREATE TABLE relay_checkpoints (
    name       TEXT    NOT NULL PRIMARY KEY,
    position   INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;

-- +goose Down
DROP TABLE relay_checkpoints;
DROP TABLE changes;
