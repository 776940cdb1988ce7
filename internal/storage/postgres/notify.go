package postgres

// RelayChannel is the channel the store NOTIFYs after its writes commit; its
// payload is the schema written (current_schema() of the pool's
// search_path). internal/relay LISTENs on it. See internal/pgnotify for why
// the NOTIFY is sent after the commit and not inside it.
const RelayChannel = "nvent_relay"

// notifyRelay is the statement the store's pgnotify.Notifier sends.
const notifyRelay = `SELECT pg_notify('` + RelayChannel + `', current_schema())`
