package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/nvent/nvent/internal/domain"
)

// eventColumns reads a domain.Event with scanEvent. Optional text columns
// are NULL when empty.
const eventColumns = `id, subject, seq, type, COALESCE(run_id, ''), COALESCE(flow_name, ''),
	COALESCE(step_name, ''), COALESCE(step_id, ''), attempt, data, ts`

func scanEvent(row pgx.CollectableRow) (domain.Event, error) {
	var e domain.Event
	var data []byte
	err := row.Scan(&e.ID, &e.Subject, &e.Seq, &e.Type, &e.RunID, &e.FlowName,
		&e.StepName, &e.StepID, &e.Attempt, &data, &e.TS)
	e.Data = data
	e.TS = e.TS.UTC()
	return e, err
}

// The statements of an append.
const (
	// findStored returns the events of the batch whose ids the subject
	// already holds. Each id is looked up on its own in the unique
	// (subject, id) index: the LATERAL … LIMIT 1 keeps the planner from
	// scanning the whole subject, which it would do for id = ANY(…) or a
	// join while the table's statistics are young.
	findStored = `SELECT ` + eventColumns + ` FROM unnest($2::text[]) AS batch(wanted)
CROSS JOIN LATERAL (SELECT * FROM events WHERE subject = $1 AND id = batch.wanted LIMIT 1) AS e`
	// currentSeq is the subject's last seq, 0 before its first append.
	currentSeq = `SELECT COALESCE((SELECT last_seq FROM streams WHERE subject = $1), 0)`

	// lockSubject serialises the appends of one subject until their
	// transaction ends. An advisory lock, unlike a row lock, does not give
	// the transaction an id: the id comes with the first write, once the
	// lock is held, so ids of one subject's appends grow with seq. (Two
	// subjects whose hashes collide merely queue together.)
	lockSubject = `SELECT pg_advisory_xact_lock(hashtextextended('nvent:append:' || $1, 0))`

	// appendAny and appendAt write the batch's $2 new events in one
	// statement. The stream CTE moves streams.last_seq by $2 and returns
	// the seq before, prev; the events get seqs prev+1 … prev+$2 in the
	// order given, each with the correlation id $13 (NULL when empty).
	// appendAny serves no expected seq ($3 NULL) and expected
	// seq 0: it creates the subject's row, or updates it only when $3 is
	// NULL or matches. appendAt serves any other expected seq: it updates an
	// existing row at seq $3. The statement returns prev (NULL when the
	// expected seq did not match and nothing was written) and the subject's
	// seq before the statement.
	appendAny = `WITH stream AS (
	INSERT INTO streams AS s (subject, last_seq) VALUES ($1, $2)
	ON CONFLICT (subject) DO UPDATE SET last_seq = s.last_seq + $2
		WHERE $3::bigint IS NULL OR s.last_seq = $3
	RETURNING last_seq - $2 AS prev
)` + insertNew
	appendAt = `WITH stream AS (
	UPDATE streams SET last_seq = last_seq + $2 WHERE subject = $1 AND last_seq = $3::bigint
	RETURNING last_seq - $2 AS prev
)` + insertNew
	insertNew = `, inserted AS (
	INSERT INTO events (subject, seq, id, type, run_id, flow_name, step_name, step_id, attempt, data, ts, correlation_id)
	SELECT $1, stream.prev + e.ord, e.id, e.type, NULLIF(e.run_id, ''), NULLIF(e.flow_name, ''),
		NULLIF(e.step_name, ''), NULLIF(e.step_id, ''), e.attempt, e.data, $4, NULLIF($13::text, '')
	FROM stream CROSS JOIN unnest($5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::bigint[], $12::json[])
		WITH ORDINALITY AS e(id, type, run_id, flow_name, step_name, step_id, attempt, data, ord)
	ORDER BY e.ord
)
SELECT (SELECT prev FROM stream), COALESCE((SELECT last_seq FROM streams WHERE subject = $1), 0)`
)

// Append stores events at the end of subject, atomically.
//
// It sends one pipelined READ COMMITTED transaction: lockSubject, the
// append statement, COMMIT. Nothing waits on the client while the lock is
// held. Appends of a subject run one at a time from the lock to the commit,
// each moving last_seq and inserting its events in one statement that sees
// every earlier append, so seqs have no gaps, and an append that fails or
// conflicts consumes none.
//
// Idempotency costs nothing on the way that succeeds: the unique (subject,
// id) constraint fails the statement when the subject already holds one of
// the ids. Only then does Append read which ids are stored (returning them
// and writing nothing when it holds them all) and retry without them. Every
// retry finds at least one more stored id, so there are at most
// len(events) of them. An expected seq that does not match is, likewise,
// told apart from a retry of an append that succeeded by reading the ids.
func (s *Store) Append(ctx context.Context, subject string, in []domain.NewEvent, opts domain.AppendOptions) (domain.AppendResult, error) {
	events, err := domain.PrepareAppend(subject, in)
	if err != nil {
		return domain.AppendResult{}, err
	}
	ids := make([]string, len(events))
	for i, e := range events {
		ids[i] = e.ID
	}
	stored := map[string]domain.Event{}
	for range len(events) + 1 {
		res, seqAtLock, err := s.appendNew(ctx, subject, events, stored, opts)
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "23505" && pgErr.ConstraintName == "events_subject_id_key" {
			// The subject holds one of the ids: a retry, or another append
			// of the same id.
			var current int64
			stored, current, err = s.findStored(ctx, subject, ids)
			if err != nil {
				return domain.AppendResult{}, wrapErr(err, "appending to "+subject)
			}
			if len(stored) == len(events) {
				return appendResult(events, stored, current), nil
			}
			continue
		}
		if err != nil {
			return domain.AppendResult{}, wrapErr(err, "appending to "+subject)
		}
		if res != nil {
			s.wake.Committed()
			return *res, nil
		}
		// The expected seq did not match. If the ids were all stored by
		// then, this is a retry of a successful append, not a conflict.
		stored, current, err := s.findStored(ctx, subject, ids)
		if err != nil {
			return domain.AppendResult{}, wrapErr(err, "appending to "+subject)
		}
		if len(stored) == len(events) {
			return appendResult(events, stored, current), nil
		}
		return domain.AppendResult{}, domain.Errorf(domain.CodeConflict,
			"subject %s is at seq %d; expected seq %d", subject, seqAtLock, *opts.ExpectedSeq)
	}
	// Unreachable: each retry found one more stored id.
	return domain.AppendResult{}, domain.Errorf(domain.CodeConflict, "concurrent appends of the same event ids to %s; retry", subject)
}

// findStored returns the stored events of subject among ids, by id, and the
// subject's seq read after them (not below any of their seqs).
func (s *Store) findStored(ctx context.Context, subject string, ids []string) (map[string]domain.Event, int64, error) {
	stored := make(map[string]domain.Event)
	var current int64
	b := &pgx.Batch{}
	b.Queue(findStored, subject, ids).Query(func(rows pgx.Rows) error {
		events, err := pgx.CollectRows(rows, scanEvent)
		for _, e := range events {
			stored[e.ID] = e
		}
		return err
	})
	b.Queue(currentSeq, subject).QueryRow(func(row pgx.Row) error { return row.Scan(&current) })
	if err := s.pool.SendBatch(ctx, b).Close(); err != nil {
		return nil, 0, err
	}
	return stored, current, nil
}

// appendNew writes the events that are not in stored, after locking the
// subject, and returns the result, or nil and the subject's seq when
// opts.ExpectedSeq did not match and nothing was written.
func (s *Store) appendNew(ctx context.Context, subject string, events []domain.Event, stored map[string]domain.Event, opts domain.AppendOptions) (*domain.AppendResult, int64, error) {
	var cols eventColumnsIn
	for _, e := range events {
		if _, ok := stored[e.ID]; !ok {
			cols.add(e)
		}
	}
	stmt := appendAny
	if opts.ExpectedSeq != nil && *opts.ExpectedSeq != 0 {
		stmt = appendAt
	}
	var prev *int64
	var current int64
	b := &pgx.Batch{}
	b.BeginTx(pgx.TxOptions{IsoLevel: pgx.ReadCommitted})
	b.Queue(lockSubject, subject)
	b.Queue(stmt, subject, int64(len(cols.id)), opts.ExpectedSeq, events[0].TS,
		cols.id, cols.typ, cols.runID, cols.flowName, cols.stepName, cols.stepID, cols.attempt, cols.data,
		domain.CorrelationID(ctx),
	).QueryRow(func(row pgx.Row) error { return row.Scan(&prev, &current) })
	b.Queue("COMMIT")
	br := s.pool.SendBatch(ctx, b)
	tx := br.Tx()
	// After a failure the transaction is still open: roll it back. After
	// the batch's COMMIT, the transaction is closed and this does nothing.
	defer func() { _ = tx.Rollback(ctx) }()
	if err := br.Close(); err != nil {
		return nil, 0, err
	}
	if prev == nil {
		return nil, current, nil
	}
	res := appendResult(events, stored, *prev)
	return &res, current, nil
}

// appendResult returns the result of an append to a subject at seq prev:
// the stored events in place of their ids, and the others with the seqs
// after prev, in order.
func appendResult(events []domain.Event, stored map[string]domain.Event, prev int64) domain.AppendResult {
	res := domain.AppendResult{Events: make([]domain.Event, len(events)), PreviousSeq: prev}
	seq := prev
	for i, e := range events {
		if old, ok := stored[e.ID]; ok {
			res.Events[i] = old
			continue
		}
		seq++
		e.Seq = seq
		res.Events[i] = e
	}
	return res
}

// eventColumnsIn holds new events column by column, for insertNew.
type eventColumnsIn struct {
	id, typ, runID, flowName, stepName, stepID []string
	attempt                                    []int64
	data                                       []json.RawMessage
}

func (c *eventColumnsIn) add(e domain.Event) {
	c.id = append(c.id, e.ID)
	c.typ = append(c.typ, e.Type)
	c.runID = append(c.runID, e.RunID)
	c.flowName = append(c.flowName, e.FlowName)
	c.stepName = append(c.stepName, e.StepName)
	c.stepID = append(c.stepID, e.StepID)
	c.attempt = append(c.attempt, int64(e.Attempt))
	c.data = append(c.data, e.Data)
}

// Read returns the events of subject selected by opts, filtered, ordered and
// limited in SQL. An unknown subject reads as empty.
func (s *Store) Read(ctx context.Context, subject string, opts domain.ReadOptions) ([]domain.Event, error) {
	if err := domain.ValidateSubject(subject); err != nil {
		return nil, err
	}
	opts, err := opts.Normalize()
	if err != nil {
		return nil, err
	}
	before := opts.Before
	if before == 0 {
		before = math.MaxInt64
	}
	var q strings.Builder
	q.WriteString(`SELECT ` + eventColumns + ` FROM events WHERE subject = $1 AND seq > $2 AND seq < $3`)
	args := []any{subject, opts.After, before, opts.Limit}
	if len(opts.Types) > 0 {
		q.WriteString(` AND type = ANY($5::text[])`)
		args = append(args, opts.Types)
	}
	if opts.Order == domain.Desc {
		q.WriteString(` ORDER BY seq DESC LIMIT $4`)
	} else {
		q.WriteString(` ORDER BY seq LIMIT $4`)
	}
	rows, err := s.pool.Query(ctx, q.String(), args...)
	if err != nil {
		return nil, wrapErr(err, "reading "+subject)
	}
	events, err := pgx.CollectRows(rows, scanEvent)
	if err != nil {
		return nil, wrapErr(err, "reading "+subject)
	}
	return events, nil
}
