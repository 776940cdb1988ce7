// Package postgres is the Postgres adapter of storage.Store, on a pgx v5
// connection pool. Its schema comes from the goose migrations embedded in
// package migrations, applied by a Migrator.
//
// Appends to one subject run one at a time under a transaction-scoped
// advisory lock and move the subject's last seq (table streams) in the
// statement that inserts their events, which makes seq gapless and, within
// a subject, transaction ids grow with seq. The events table is both the
// log and the outbox that a relay reads in commit order, by (tx_id,
// position). Documents use optimistic versions checked in the statement that
// writes them.
//
// Every successful document or key write also inserts one row into table
// changes (save, delete, kv.set, kv.delete), in the same statement (or, for
// an increment, the same transaction): the outbox of what is not an event,
// read by the relay by (tx_id, position) as well. The writes of one
// document or key take a transaction-scoped advisory lock before writing,
// so that, as for a subject's appends, their transaction ids grow in the
// order they write.
//
// Key-value expiry is judged against this process's clock (domain.Now), the
// same clock that computes expires_at.
//
// Every error is a *domain.Error (invalid input, conflict, not found, too
// large, or unavailable when Postgres cannot be reached or does not answer
// in time) or a plain error wrapping the unforeseen.
package postgres

import (
	"context"
	"log/slog"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/nvent/nvent/internal/domain"
	"github.com/nvent/nvent/internal/pgnotify"
	"github.com/nvent/nvent/internal/storage"
)

// Store is the Postgres storage.Store. It is safe for concurrent use.
type Store struct {
	pool *pgxpool.Pool
	// ownsPool is set by Open: Close then closes the pool.
	ownsPool bool
	// wake tells the relay that a write committed.
	wake *pgnotify.Notifier
}

var _ storage.Store = (*Store)(nil)

// New returns a Store on pool, whose search_path must lead to a migrated
// schema (see NewPool and Migrator). The Store borrows the pool: Close
// leaves it open for its owner to close.
func New(pool *pgxpool.Pool) *Store {
	return &Store{pool: pool, wake: pgnotify.New(pool, notifyRelay)}
}

// Open creates a pool for cfg, applies pending migrations when
// cfg.AutoMigrate is set, and returns a Store that owns the pool, with a
// cleanup that closes it (as Close does). logger receives the migration
// progress; nil discards it.
func Open(ctx context.Context, cfg Config, logger *slog.Logger) (*Store, func(), error) {
	pool, closePool, err := NewPool(ctx, cfg)
	if err != nil {
		return nil, nil, err
	}
	if cfg.AutoMigrate {
		if _, err := NewMigrator(pool, cfg, logger).Up(ctx); err != nil {
			closePool()
			return nil, nil, err
		}
	}
	s := New(pool)
	s.ownsPool = true
	return s, func() { _ = s.Close() }, nil
}

// Ping reports whether Postgres answers, as a domain.CodeUnavailable error
// when it does not.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.pool.Ping(ctx); err != nil {
		return domain.Wrap(domain.CodeUnavailable, err, "store unavailable")
	}
	return nil
}

// Close closes the pool if the Store owns it (see Open and New). Calls
// after the first do nothing.
func (s *Store) Close() error {
	if s.ownsPool {
		s.pool.Close()
	}
	return nil
}
