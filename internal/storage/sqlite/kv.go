package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"time"

	"github.com/nvent/nvent/internal/domain"
)

// sweepBatch is how many expired entries a SetKey deletes at most, besides
// its own key, so that keys nobody touches again do not pile up.
const sweepBatch = 100

// GetKey implements storage.Store: an entry whose expiry has passed reads as
// absent.
func (s *Store) GetKey(ctx context.Context, key string) (domain.KVEntry, error) {
	if err := domain.ValidateKey(key); err != nil {
		return domain.KVEntry{}, err
	}
	var value []byte
	var exp sql.NullInt64
	err := s.reader.QueryRowContext(ctx, `SELECT value, expires_at FROM kv
		WHERE key = ? AND (expires_at IS NULL OR expires_at > ?)`, key, toMillis(domain.Now())).Scan(&value, &exp)
	if errors.Is(err, sql.ErrNoRows) {
		return domain.KVEntry{}, domain.Errorf(domain.CodeNotFound, "key %s not found", key)
	}
	if err != nil {
		return domain.KVEntry{}, s.fail(ctx, "getting a key", err)
	}
	return kvEntry(key, value, exp), nil
}

// SetKey implements storage.Store. It also deletes up to sweepBatch expired
// entries of other keys (which records no change: an expired entry does not
// exist), and records the kv.set change of the entry in the same write
// transaction. It signals Committed.
func (s *Store) SetKey(ctx context.Context, key string, value json.RawMessage, ttl time.Duration) (domain.KVEntry, error) {
	now := domain.Now()
	v, exp, err := domain.PrepareKV(key, value, ttl, now)
	if err != nil {
		return domain.KVEntry{}, err
	}
	var expMillis sql.NullInt64
	if exp != nil {
		expMillis = sql.NullInt64{Int64: toMillis(*exp), Valid: true}
	}
	entry := domain.KVEntry{Key: key, Value: v, ExpiresAt: exp}
	err = s.writeTx(ctx, "setting a key", func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM kv WHERE key IN
			(SELECT key FROM kv WHERE expires_at <= ? LIMIT ?)`, toMillis(now), sweepBatch); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO kv (key, value, expires_at) VALUES (?, ?, ?)
			ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at`,
			key, string(v), expMillis)
		if err != nil {
			return err
		}
		return s.recordChange(ctx, tx, change{kind: changeKeySet, key: key, body: entry, at: now})
	})
	if err != nil {
		return domain.KVEntry{}, err
	}
	s.signalCommitted()
	return entry, nil
}

// DeleteKey implements storage.Store, recording the kv.delete change in the
// same write transaction. An expired entry counts as absent (not found,
// which records nothing) and is left to the sweep of a later SetKey. It
// signals Committed.
func (s *Store) DeleteKey(ctx context.Context, key string) error {
	if err := domain.ValidateKey(key); err != nil {
		return err
	}
	err := s.writeTx(ctx, "deleting a key", func(tx *sql.Tx) error {
		now := domain.Now()
		res, err := tx.ExecContext(ctx, `DELETE FROM kv
			WHERE key = ? AND (expires_at IS NULL OR expires_at > ?)`, key, toMillis(now))
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return err
		}
		if n == 0 {
			return domain.Errorf(domain.CodeNotFound, "key %s not found", key)
		}
		return s.recordChange(ctx, tx, change{kind: changeKeyDelete, key: key, at: now})
	})
	if err != nil {
		return err
	}
	s.signalCommitted()
	return nil
}

// IncrKey implements storage.Store: read, domain.IncrValue, write and the
// kv.set change of the result happen in one write transaction. An expired
// entry counts as absent: the result starts from delta and has no expiry.
// It signals Committed.
func (s *Store) IncrKey(ctx context.Context, key string, delta int64) (domain.KVEntry, error) {
	if err := domain.ValidateKey(key); err != nil {
		return domain.KVEntry{}, err
	}
	var entry domain.KVEntry
	err := s.writeTx(ctx, "incrementing a key", func(tx *sql.Tx) error {
		now := domain.Now()
		var cur []byte
		var exp sql.NullInt64
		err := tx.QueryRowContext(ctx, `SELECT value, expires_at FROM kv
			WHERE key = ? AND (expires_at IS NULL OR expires_at > ?)`, key, toMillis(now)).Scan(&cur, &exp)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		_, v, err := domain.IncrValue(key, cur, delta)
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO kv (key, value, expires_at) VALUES (?, ?, ?)
			ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at`,
			key, string(v), exp)
		if err != nil {
			return err
		}
		entry = kvEntry(key, v, exp)
		return s.recordChange(ctx, tx, change{kind: changeKeySet, key: key, body: entry, at: now})
	})
	if err != nil {
		return domain.KVEntry{}, err
	}
	s.signalCommitted()
	return entry, nil
}

// kvEntry builds an entry from its stored columns.
func kvEntry(key string, value []byte, exp sql.NullInt64) domain.KVEntry {
	e := domain.KVEntry{Key: key, Value: value}
	if exp.Valid {
		t := fromMillis(exp.Int64)
		e.ExpiresAt = &t
	}
	return e
}
