package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nvent/nvent/internal/domain"
)

// The Store is the outbox of a relay, as the Postgres store is: the events
// table (the log itself) and the changes table, which gets one row per
// document or key change in the write transaction of the change. Writers
// are serialised (one writer connection per Store, BEGIN IMMEDIATE, and
// SQLite's write lock between processes) and positions are assigned inside
// the write transaction, so in both tables position order is commit order:
// a relay that reads "position > checkpoint ORDER BY position" from a
// committed snapshot skips nothing.

// The outbox tables that ReadOutbox, Checkpoint and SaveCheckpoint accept.
const (
	OutboxEvents  = "events"
	OutboxChanges = "changes"
)

// The kinds of change rows, as bus.Kind spells them.
const (
	changeSave      = "save"
	changeDelete    = "delete"
	changeKeySet    = "kv.set"
	changeKeyDelete = "kv.delete"
)

// OutboxRow is one row of an outbox table. Event is set for the events
// table; the change fields for the changes table, where Collection and
// DocumentID are set for save and delete, Key for kv.set and kv.delete, and
// Body holds the saved document (json.Marshal of a domain.Document) for save
// or the entry (json.Marshal of a domain.KVEntry) for kv.set.
type OutboxRow struct {
	// Position is the row's place in its table's commit order.
	Position int64
	// Event is the appended event (events table only).
	Event *domain.Event

	ID         string // the change id (changes table only, as are the fields below)
	Kind       string // "save", "delete", "kv.set" or "kv.delete"
	Collection string
	DocumentID string
	Key        string
	Body       json.RawMessage
	At         time.Time // when the change was written

	// CorrelationID is the id of the request that wrote the row (both
	// tables), "" when the write carried none.
	CorrelationID string
}

const (
	sqlInsertChange = `INSERT INTO changes (id, kind, collection, doc_id, key, body, at, correlation_id)
		VALUES (?, ?, NULLIF(?, ''), NULLIF(?, ''), NULLIF(?, ''), ?, ?, NULLIF(?, ''))`
	sqlReadEvents = `SELECT position, subject, COALESCE(correlation_id, ''), ` + eventColumns + ` FROM events
		WHERE position > ? ORDER BY position LIMIT ?`
	sqlReadChanges = `SELECT position, id, kind, COALESCE(collection, ''), COALESCE(doc_id, ''),
		COALESCE(key, ''), body, at, COALESCE(correlation_id, '') FROM changes
		WHERE position > ? ORDER BY position LIMIT ?`
	sqlCheckpoint     = `SELECT position FROM relay_checkpoints WHERE name = ?`
	sqlSaveCheckpoint = `INSERT INTO relay_checkpoints (name, position, updated_at) VALUES (?, ?, ?)
		ON CONFLICT (name) DO UPDATE SET position = excluded.position, updated_at = excluded.updated_at`
	sqlPruneChanges = `DELETE FROM changes WHERE position <= ?`
)

// change is a row to insert into changes.
type change struct {
	kind              string
	collection, docID string
	key               string
	body              any // marshalled to JSON when not nil
	at                time.Time
}

// recordChange inserts c into changes in tx, with a new id and the
// correlation id of ctx, through the statement prepared on the writer.
func (s *Store) recordChange(ctx context.Context, tx *sql.Tx, c change) error {
	var body sql.NullString
	if c.body != nil {
		b, err := json.Marshal(c.body)
		if err != nil {
			return fmt.Errorf("error encoding the %s change: %w", c.kind, err)
		}
		body = sql.NullString{String: string(b), Valid: true}
	}
	_, err := tx.StmtContext(ctx, s.insertChange).ExecContext(ctx,
		domain.NewID(), c.kind, c.collection, c.docID, c.key, body, toMillis(c.at), domain.CorrelationID(ctx))
	return err
}

// Committed returns a channel that receives after a write transaction that
// added events or changes commits, so that a relay in this process can read
// them at once. The channel has a capacity of one and is sent to without
// blocking: writers never wait for a reader, and the commits that happen
// before the reader gets to the channel fold into one value. Receive, then
// read the outbox until it is empty. The channel is never closed, and it
// says nothing about writes by other Stores (other processes) on the same
// file: a relay polls for those.
func (s *Store) Committed() <-chan struct{} {
	return s.committed
}

// signalCommitted tells Committed's receiver that a write committed.
func (s *Store) signalCommitted() {
	select {
	case s.committed <- struct{}{}:
	default:
	}
}

// ReadOutbox returns up to limit rows of table (OutboxEvents or
// OutboxChanges) with positions after after, in position order, which is
// commit order. It reads a committed snapshot through the reader pool, so it
// neither waits for nor delays writers, and it is safe to call concurrently.
// A table name other than those two, a negative after or a limit below one
// is invalid input.
func (s *Store) ReadOutbox(ctx context.Context, table string, after int64, limit int) ([]OutboxRow, error) {
	if err := validateOutboxTable(table); err != nil {
		return nil, err
	}
	if after < 0 {
		return nil, domain.Errorf(domain.CodeInvalidInput, "outbox position %d must not be negative", after)
	}
	if limit < 1 {
		return nil, domain.Errorf(domain.CodeInvalidInput, "outbox limit %d must be at least 1", limit)
	}
	op := "reading the " + table + " outbox"
	q, scan := sqlReadEvents, scanOutboxEvent
	if table == OutboxChanges {
		q, scan = sqlReadChanges, scanOutboxChange
	}
	rows, err := s.reader.QueryContext(ctx, q, after, limit)
	if err != nil {
		return nil, s.fail(ctx, op, err)
	}
	defer rows.Close()
	out := make([]OutboxRow, 0, min(limit, 256))
	for rows.Next() {
		r, err := scan(rows)
		if err != nil {
			return nil, s.fail(ctx, op, err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, s.fail(ctx, op, err)
	}
	return out, nil
}

// scanOutboxEvent reads a row of sqlReadEvents.
func scanOutboxEvent(rows *sql.Rows) (OutboxRow, error) {
	r := OutboxRow{Event: new(domain.Event)}
	err := scanEvent(rows, r.Event, &r.Position, &r.Event.Subject, &r.CorrelationID)
	return r, err
}

// scanOutboxChange reads a row of sqlReadChanges.
func scanOutboxChange(rows *sql.Rows) (OutboxRow, error) {
	var r OutboxRow
	var body []byte
	var at int64
	if err := rows.Scan(&r.Position, &r.ID, &r.Kind, &r.Collection, &r.DocumentID, &r.Key, &body, &at, &r.CorrelationID); err != nil {
		return r, err
	}
	if body != nil {
		r.Body = json.RawMessage(body)
	}
	r.At = fromMillis(at)
	return r, nil
}

// Checkpoint returns the position the relay stored for table (OutboxEvents
// or OutboxChanges) with SaveCheckpoint, or 0 when it stored none. It reads
// through the reader pool and is safe to call concurrently.
func (s *Store) Checkpoint(ctx context.Context, table string) (int64, error) {
	if err := validateOutboxTable(table); err != nil {
		return 0, err
	}
	var pos int64
	err := s.reader.QueryRowContext(ctx, sqlCheckpoint, table).Scan(&pos)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, s.fail(ctx, "reading the "+table+" checkpoint", err)
	}
	return pos, nil
}

// SaveCheckpoint stores position as table's checkpoint (OutboxEvents or
// OutboxChanges): every row at or below it has been relayed. For
// OutboxChanges it deletes those rows in the same write transaction, so
// that the checkpoint and the pruning commit together. It stores position
// as given, even below the current checkpoint (which replays what follows);
// a negative position is invalid input. Like every write it queues for the
// write lock; it does not signal Committed.
func (s *Store) SaveCheckpoint(ctx context.Context, table string, position int64) error {
	if err := validateOutboxTable(table); err != nil {
		return err
	}
	if position < 0 {
		return domain.Errorf(domain.CodeInvalidInput, "checkpoint position %d must not be negative", position)
	}
	return s.writeTx(ctx, "saving the "+table+" checkpoint", func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, sqlSaveCheckpoint, table, position, toMillis(domain.Now())); err != nil {
			return err
		}
		if table == OutboxChanges {
			if _, err := tx.ExecContext(ctx, sqlPruneChanges, position); err != nil {
				return err
			}
		}
		return nil
	})
}

// validateOutboxTable accepts the names of the outbox tables only; the
// queries use constant table names, never this input.
func validateOutboxTable(table string) error {
	if table != OutboxEvents && table != OutboxChanges {
		return domain.Errorf(domain.CodeInvalidInput, "outbox table %q is not %q or %q", table, OutboxEvents, OutboxChanges)
	}
	return nil
}
