package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nvent/nvent/internal/domain"
)

// eventColumns selects an event in the order scanEvents reads it. Optional
// fields are NULL when absent and read back as their zero value.
const eventColumns = `seq, id, type, COALESCE(run_id, ''), COALESCE(flow_name, ''),
	COALESCE(step_name, ''), COALESCE(step_id, ''), COALESCE(attempt, 0), data, ts`

// scanEvents reads the rows of an eventColumns query on subject.
func scanEvents(rows *sql.Rows, subject string) ([]domain.Event, error) {
	defer rows.Close()
	out := []domain.Event{}
	for rows.Next() {
		e := domain.Event{Subject: subject}
		if err := scanEvent(rows, &e); err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// scanEvent reads the current row into dest, the columns that precede
// eventColumns, and e.
func scanEvent(rows *sql.Rows, e *domain.Event, dest ...any) error {
	var data []byte
	var ts int64
	if err := rows.Scan(append(dest, &e.Seq, &e.ID, &e.Type, &e.RunID, &e.FlowName,
		&e.StepName, &e.StepID, &e.Attempt, &data, &ts)...); err != nil {
		return err
	}
	e.Data, e.TS = data, fromMillis(ts)
	return nil
}

// The statements of an append, prepared once per Store on the writer
// connection: parsing SQL is a large part of a small append's cost.
const (
	sqlStoredEvents = `SELECT ` + eventColumns + ` FROM events
		WHERE subject = ? AND id IN (SELECT value FROM json_each(?))`
	sqlLastSeq    = `SELECT last_seq FROM streams WHERE subject = ?`
	sqlSetLastSeq = `INSERT INTO streams (subject, last_seq) VALUES (?, ?)
		ON CONFLICT (subject) DO UPDATE SET last_seq = excluded.last_seq`
	// sqlInsertEvent stores the correlation id of the append's context
	// with each event, NULL when empty.
	sqlInsertEvent = `INSERT INTO events
		(subject, seq, id, type, run_id, flow_name, step_name, step_id, attempt, data, ts, correlation_id)
		VALUES (?, ?, ?, ?, NULLIF(?, ''), NULLIF(?, ''), NULLIF(?, ''), NULLIF(?, ''), NULLIF(?, 0), ?, ?, NULLIF(?, ''))`
)

// appendStmts are the prepared statements of Append.
type appendStmts struct {
	stored, lastSeq, setLastSeq, insert *sql.Stmt
}

// prepareAppend prepares the statements of Append on db; Append runs them in
// its transaction with tx.StmtContext, which reuses the connection's
// prepared statement.
func prepareAppend(ctx context.Context, db *sql.DB) (*appendStmts, error) {
	var st appendStmts
	for _, p := range []struct {
		stmt **sql.Stmt
		sql  string
	}{
		{&st.stored, sqlStoredEvents},
		{&st.lastSeq, sqlLastSeq},
		{&st.setLastSeq, sqlSetLastSeq},
		{&st.insert, sqlInsertEvent},
	} {
		stmt, err := db.PrepareContext(ctx, p.sql)
		if err != nil {
			st.close()
			return nil, fmt.Errorf("error preparing %q: %w", p.sql, err)
		}
		*p.stmt = stmt
	}
	return &st, nil
}

// close closes the statements that were prepared.
func (st *appendStmts) close() {
	for _, stmt := range []*sql.Stmt{st.stored, st.lastSeq, st.setLastSeq, st.insert} {
		if stmt != nil {
			_ = stmt.Close()
		}
	}
}

// Append implements storage.Store in one write transaction: it looks up
// which ids of the batch subject already holds (the unique (subject, id)
// constraint is what makes this idempotent, across restarts too), and unless
// all do, checks opts.ExpectedSeq and inserts the rest with the next seqs.
// Once an append that inserted events commits, it signals Committed.
func (s *Store) Append(ctx context.Context, subject string, in []domain.NewEvent, opts domain.AppendOptions) (domain.AppendResult, error) {
	evs, err := domain.PrepareAppend(subject, in)
	if err != nil {
		return domain.AppendResult{}, err
	}
	var res domain.AppendResult
	inserted := false
	err = s.writeTx(ctx, "appending events", func(tx *sql.Tx) error {
		stored, err := storedByID(ctx, tx.StmtContext(ctx, s.appendStmts.stored), subject, evs)
		if err != nil {
			return err
		}
		var last int64
		err = tx.StmtContext(ctx, s.appendStmts.lastSeq).QueryRowContext(ctx, subject).Scan(&last)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		res = domain.AppendResult{Events: make([]domain.Event, len(evs)), PreviousSeq: last}
		if len(stored) == len(evs) {
			for i, e := range evs {
				res.Events[i] = stored[e.ID]
			}
			return nil
		}
		if opts.ExpectedSeq != nil && *opts.ExpectedSeq != last {
			return domain.Errorf(domain.CodeConflict, "subject %s is at seq %d; expected seq %d", subject, last, *opts.ExpectedSeq)
		}
		seq := last + int64(len(evs)-len(stored))
		if _, err := tx.StmtContext(ctx, s.appendStmts.setLastSeq).ExecContext(ctx, subject, seq); err != nil {
			return err
		}
		insert := tx.StmtContext(ctx, s.appendStmts.insert)
		corr := domain.CorrelationID(ctx)
		inserted = true
		seq = last
		for i, e := range evs {
			if old, ok := stored[e.ID]; ok {
				res.Events[i] = old
				continue
			}
			seq++
			e.Seq = seq
			if _, err := insert.ExecContext(ctx, subject, e.Seq, e.ID, e.Type, e.RunID, e.FlowName,
				e.StepName, e.StepID, e.Attempt, string(e.Data), toMillis(e.TS), corr); err != nil {
				return err
			}
			res.Events[i] = e
		}
		return nil
	})
	if err != nil {
		return domain.AppendResult{}, err
	}
	if inserted {
		s.signalCommitted()
	}
	return res, nil
}

// storedByID returns the events of subject whose ids appear in evs, by id.
func storedByID(ctx context.Context, stored *sql.Stmt, subject string, evs []domain.Event) (map[string]domain.Event, error) {
	ids := make([]string, len(evs))
	for i, e := range evs {
		ids[i] = e.ID
	}
	idsJSON, err := json.Marshal(ids)
	if err != nil {
		return nil, err
	}
	rows, err := stored.QueryContext(ctx, subject, string(idsJSON))
	if err != nil {
		return nil, err
	}
	found, err := scanEvents(rows, subject)
	if err != nil {
		return nil, err
	}
	byID := make(map[string]domain.Event, len(found))
	for _, e := range found {
		byID[e.ID] = e
	}
	return byID, nil
}

// Read implements storage.Store with one query on the (subject, seq) index.
func (s *Store) Read(ctx context.Context, subject string, opts domain.ReadOptions) ([]domain.Event, error) {
	if err := domain.ValidateSubject(subject); err != nil {
		return nil, err
	}
	opts, err := opts.Normalize()
	if err != nil {
		return nil, err
	}
	q := `SELECT ` + eventColumns + ` FROM events WHERE subject = ? AND seq > ?`
	args := []any{subject, opts.After}
	if opts.Before > 0 {
		q += ` AND seq < ?`
		args = append(args, opts.Before)
	}
	if len(opts.Types) > 0 {
		q += ` AND type IN (` + placeholders(len(opts.Types)) + `)`
		for _, t := range opts.Types {
			args = append(args, t)
		}
	}
	if opts.Order == domain.Desc {
		q += ` ORDER BY seq DESC`
	} else {
		q += ` ORDER BY seq ASC`
	}
	q += ` LIMIT ?`
	args = append(args, opts.Limit)

	rows, err := s.reader.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, s.fail(ctx, "reading events", err)
	}
	evs, err := scanEvents(rows, subject)
	if err != nil {
		return nil, s.fail(ctx, "reading events", err)
	}
	return evs, nil
}
