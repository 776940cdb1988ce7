-- The correlation id of the request that made a change: stored with every
-- event and change row, so that the relay can put it on the bus change it
-- publishes (and from there on the stream message's metadata). NULL when
-- the write carried none. The tables are STRICT: the column is declared
-- TEXT.

-- +goose Up
ALTER TABLE events ADD COLUMN correlation_id TEXT;
ALTER TABLE changes ADD COLUMN correlation_id TEXT;

-- +goose Down
ALTER TABLE changes DROP COLUMN correlation_id;
ALTER TABLE events DROP COLUMN correlation_id;
