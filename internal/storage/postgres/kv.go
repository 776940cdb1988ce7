package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/nvent/nvent/internal/domain"
)

// The key-value statements. An entry is live while expires_at is NULL or
// after $now; expired rows stay until a set, incr or delete replaces or
// removes them. Every statement that changes an entry also records the
// change (a row of changes, for the relay), in the same statement, and
// every write of a key first takes serialiseKey, for the reason the
// document statements take serialiseDocument: the writes of one key get
// their transaction ids in the order they write.
const (
	getKey = `SELECT value, expires_at FROM kv
WHERE key = $1 AND (expires_at IS NULL OR expires_at > $2)`
	// serialiseKey serialises the writes of key $1 until their
	// transaction ends, without giving the transaction an id.
	serialiseKey = `SELECT pg_advisory_xact_lock(hashtextextended('nvent:kv:' || $1::text, 0))`
	// setKey and updateKey take $1 key, $2 value, $3 expires_at, $4 now,
	// $5 the change id and $6 the correlation id (NULL when empty).
	setKey = `WITH l AS (` + serialiseKey + `), k AS (
	INSERT INTO kv (key, value, expires_at, updated_at)
	SELECT $1::text, $2::json, $3::timestamptz, $4::timestamptz FROM l
	ON CONFLICT (key) DO UPDATE
		SET value = EXCLUDED.value, expires_at = EXCLUDED.expires_at, updated_at = EXCLUDED.updated_at
	RETURNING 1
)` + recordSet
	// updateKey runs after serialiseKey and lockKey, in their transaction.
	updateKey = `WITH k AS (
	UPDATE kv SET value = $2, expires_at = $3, updated_at = $4 WHERE key = $1
	RETURNING 1
)` + recordSet
	// recordSet inserts the change of the written row k. The body is the
	// JSON value that domain.KVEntry marshals to (no expiresAt when the
	// entry does not expire), spaced as json_build_object does, with the
	// value as stored.
	recordSet = `
INSERT INTO changes (id, kind, key, body, at, correlation_id)
SELECT $5, 'kv.set', $1, CASE WHEN $3::timestamptz IS NULL
	THEN json_build_object('key', $1::text, 'value', $2::json)
	ELSE json_build_object('key', $1::text, 'value', $2::json,
		'expiresAt', to_char($3::timestamptz AT TIME ZONE 'UTC', ` + timeFormat + `))
	END, $4, NULLIF($6::text, '')
FROM k`
	// deleteKey removes the row, expired or not, and tells which it was:
	// it records the change, with id $3 at $2 and the correlation id $4
	// (NULL when empty), only for a live entry.
	deleteKey = `WITH l AS (` + serialiseKey + `), k AS (
	DELETE FROM kv USING l WHERE key = $1 RETURNING expires_at
), c AS (
	INSERT INTO changes (id, kind, key, at, correlation_id)
	SELECT $3, 'kv.delete', $1, $2, NULLIF($4::text, '') FROM k WHERE k.expires_at IS NULL OR k.expires_at > $2
)
SELECT expires_at FROM k`
	// lockKey returns the key's row locked until the end of the
	// transaction, first creating it as 0 when absent (the creation is
	// undone if the transaction rolls back).
	lockKey = `INSERT INTO kv (key, value, expires_at, updated_at) VALUES ($1, '0', NULL, $2)
ON CONFLICT (key) DO UPDATE SET value = kv.value
RETURNING value, expires_at`
)

// GetKey returns a live entry or a not-found error.
func (s *Store) GetKey(ctx context.Context, key string) (domain.KVEntry, error) {
	if err := domain.ValidateKey(key); err != nil {
		return domain.KVEntry{}, err
	}
	e := domain.KVEntry{Key: key}
	var value []byte
	err := s.pool.QueryRow(ctx, getKey, key, domain.Now()).Scan(&value, &e.ExpiresAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return domain.KVEntry{}, keyNotFound(key)
	}
	if err != nil {
		return domain.KVEntry{}, wrapErr(err, "reading key "+key)
	}
	e.Value = value
	e.ExpiresAt = utc(e.ExpiresAt)
	return e, nil
}

// SetKey stores value under key, replacing any entry, and records a kv.set
// change holding the entry, in one statement; ttl > 0 makes it expire ttl
// from now, 0 never.
func (s *Store) SetKey(ctx context.Context, key string, value json.RawMessage, ttl time.Duration) (domain.KVEntry, error) {
	now := domain.Now()
	value, exp, err := domain.PrepareKV(key, value, ttl, now)
	if err != nil {
		return domain.KVEntry{}, err
	}
	if _, err := s.pool.Exec(ctx, setKey, key, value, exp, now, domain.NewID(), domain.CorrelationID(ctx)); err != nil {
		return domain.KVEntry{}, wrapErr(err, "setting key "+key)
	}
	s.wake.Committed()
	return domain.KVEntry{Key: key, Value: value, ExpiresAt: exp}, nil
}

// DeleteKey removes a key and records a kv.delete change, in one
// statement: not found if absent or expired (an expired row is removed all
// the same, without a change).
func (s *Store) DeleteKey(ctx context.Context, key string) error {
	if err := domain.ValidateKey(key); err != nil {
		return err
	}
	now := domain.Now()
	var exp *time.Time
	err := s.pool.QueryRow(ctx, deleteKey, key, now, domain.NewID(), domain.CorrelationID(ctx)).Scan(&exp)
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && domain.Expired(exp, now)) {
		return keyNotFound(key)
	}
	if err != nil {
		return wrapErr(err, "deleting key "+key)
	}
	s.wake.Committed()
	return nil
}

// IncrKey adds delta to the integer under key, and records a kv.set change
// holding the new entry, in a transaction that holds the key's locks, so
// concurrent increments serialise. It takes three round trips: the
// pipelined BEGIN and locks, the update, the commit. An absent or
// expired key counts as 0 and gets no expiry; a live one keeps its expiry.
// A value that is not an integer, or a sum that overflows, is a conflict
// and changes nothing.
func (s *Store) IncrKey(ctx context.Context, key string, delta int64) (domain.KVEntry, error) {
	if err := domain.ValidateKey(key); err != nil {
		return domain.KVEntry{}, err
	}
	e, err := s.incrTx(ctx, key, delta)
	if err != nil {
		return domain.KVEntry{}, wrapErr(err, "incrementing key "+key)
	}
	return e, nil
}

func (s *Store) incrTx(ctx context.Context, key string, delta int64) (domain.KVEntry, error) {
	now := domain.Now()
	var current []byte
	var exp *time.Time
	b := &pgx.Batch{}
	b.BeginTx(pgx.TxOptions{IsoLevel: pgx.ReadCommitted})
	b.Queue(serialiseKey, key)
	b.Queue(lockKey, key, now).QueryRow(func(row pgx.Row) error { return row.Scan(&current, &exp) })
	br := s.pool.SendBatch(ctx, b)
	tx := br.Tx()
	// A no-op after Commit; a rollback that fails closes the connection.
	defer func() { _ = tx.Rollback(ctx) }()
	if err := br.Close(); err != nil {
		return domain.KVEntry{}, err
	}
	if domain.Expired(exp, now) {
		current, exp = nil, nil
	}
	_, value, err := domain.IncrValue(key, current, delta)
	if err != nil {
		return domain.KVEntry{}, err
	}
	if _, err := tx.Exec(ctx, updateKey, key, value, exp, now, domain.NewID(), domain.CorrelationID(ctx)); err != nil {
		return domain.KVEntry{}, err
	}
	if err := tx.Commit(ctx); err != nil {
		return domain.KVEntry{}, err
	}
	s.wake.Committed()
	return domain.KVEntry{Key: key, Value: value, ExpiresAt: utc(exp)}, nil
}

func keyNotFound(key string) error {
	return domain.Errorf(domain.CodeNotFound, "key %q not found", key)
}

// utc returns t in UTC, nil for nil.
func utc(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}
