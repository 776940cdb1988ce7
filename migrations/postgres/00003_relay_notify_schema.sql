-- The relay's wake-up names the schema of the table written, not the
-- writing session's current_schema(): a writer that qualifies table names
-- under another search_path must still wake the relay at once.

-- +goose Up
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION nvent_notify_relay() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('nvent_relay', TG_TABLE_SCHEMA);
    RETURN NULL;
END
$$;
-- +goose StatementEnd

-- +goose Down
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION nvent_notify_relay() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('nvent_relay', current_schema());
    RETURN NULL;
END
$$;
-- +goose StatementEnd
