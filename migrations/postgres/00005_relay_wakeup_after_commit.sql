-- The relay's wake-up leaves the writing transaction. A NOTIFY inside a
-- transaction makes PostgreSQL take a database-wide lock before the commit
-- and hold it until the commit is flushed, so every appending transaction
-- committed one at a time (no group commit). The store now sends one
-- NOTIFY nvent_relay after its writes commit, from its own short
-- transaction, coalescing the commits that happen while one is on its way
-- (see internal/storage/postgres, notifier). Writers other than nvent's
-- store no longer wake the relay at once: its poll finds their rows.

-- +goose Up
DROP TRIGGER changes_notify_relay ON changes;
DROP TRIGGER events_notify_relay ON events;
DROP FUNCTION nvent_notify_relay();

-- +goose Down
-- +goose StatementBegin
CREATE FUNCTION nvent_notify_relay() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('nvent_relay', TG_TABLE_SCHEMA);
    RETURN NULL;
END
$$;
-- +goose StatementEnd

CREATE TRIGGER events_notify_relay AFTER INSERT ON events
    FOR EACH STATEMENT EXECUTE FUNCTION nvent_notify_relay();
CREATE TRIGGER changes_notify_relay AFTER INSERT ON changes
    FOR EACH STATEMENT EXECUTE FUNCTION nvent_notify_relay();
