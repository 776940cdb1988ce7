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
// removes them.
const (
	getKey = `SELECT value, expires_at FROM kv
WHERE key = $1 AND (expires_at IS NULL OR expires_at > $2)`
	setKey = `INSERT INTO kv (key, value, expires_at, updated_at) VALUES ($1, $2, $3, $4)
ON CONFLICT (key) DO UPDATE
	SET value = EXCLUDED.value, expires_at = EXCLUDED.expires_at, updated_at = EXCLUDED.updated_at`
	// deleteKey removes the row, expired or not, and tells which it was.
	deleteKey = `DELETE FROM kv WHERE key = $1 RETURNING expires_at`
	// lockKey returns the key's row locked until the end of the
	// transaction, first creating it as 0 when absent (the creation is
	// undone if the transaction rolls back).
	lockKey = `INSERT INTO kv (key, value, expires_at, updated_at) VALUES ($1, '0', NULL, $2)
ON CONFLICT (key) DO UPDATE SET value = kv.value
RETURNING value, expires_at`
	updateKey = `UPDATE kv SET value = $2, expires_at = $3, updated_at = $4 WHERE key = $1`
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

// SetKey stores value under key, replacing any entry; ttl > 0 makes it
// expire ttl from now, 0 never.
func (s *Store) SetKey(ctx context.Context, key string, value json.RawMessage, ttl time.Duration) (domain.KVEntry, error) {
	now := domain.Now()
	value, exp, err := domain.PrepareKV(key, value, ttl, now)
	if err != nil {
		return domain.KVEntry{}, err
	}
	if _, err := s.pool.Exec(ctx, setKey, key, value, exp, now); err != nil {
		return domain.KVEntry{}, wrapErr(err, "setting key "+key)
	}
	return domain.KVEntry{Key: key, Value: value, ExpiresAt: exp}, nil
}

// DeleteKey removes a key: not found if absent or expired (an expired row
// is removed all the same).
func (s *Store) DeleteKey(ctx context.Context, key string) error {
	if err := domain.ValidateKey(key); err != nil {
		return err
	}
	var exp *time.Time
	err := s.pool.QueryRow(ctx, deleteKey, key).Scan(&exp)
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && domain.Expired(exp, domain.Now())) {
		return keyNotFound(key)
	}
	if err != nil {
		return wrapErr(err, "deleting key "+key)
	}
	return nil
}

// IncrKey adds delta to the integer under key in a transaction that holds
// the key's row lock, so concurrent increments serialise. An absent or
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
	if _, err := tx.Exec(ctx, updateKey, key, value, exp, now); err != nil {
		return domain.KVEntry{}, err
	}
	if err := tx.Commit(ctx); err != nil {
		return domain.KVEntry{}, err
	}
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
