package postgres

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"path"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"github.com/nvent/nvent/migrations"
)

// Migration names one migration file.
type Migration struct {
	Version int64
	Name    string // the file name, such as 00001_init.sql
}

// MigrationStatus is a migration and whether the database has it.
type MigrationStatus struct {
	Migration
	Applied   bool
	AppliedAt time.Time // zero when not applied
}

// Migrator applies the embedded migrations (package migrations) to the
// store's schema with goose, recording them in the schema's goose_db_version
// table. Each operation creates the schema if it is missing and holds a
// Postgres advisory lock (one per schema) while it runs, so that instances
// starting together migrate one after the other. Safe for concurrent use.
type Migrator struct {
	pool   *pgxpool.Pool
	schema string
	logger *slog.Logger
}

// NewMigrator returns a Migrator working through pool on cfg.Schema (pool
// should come from NewPool with the same cfg). A nil logger discards goose's
// progress messages.
func NewMigrator(pool *pgxpool.Pool, cfg Config, logger *slog.Logger) *Migrator {
	cfg.setDefaults()
	return &Migrator{pool: pool, schema: cfg.Schema, logger: logger}
}

// Up applies every pending migration and returns those it applied, none
// when the schema is up to date.
func (m *Migrator) Up(ctx context.Context) ([]Migration, error) {
	var applied []Migration
	err := m.run(ctx, func(p *goose.Provider) error {
		results, err := p.Up(ctx)
		for _, r := range results {
			applied = append(applied, migrationOf(r.Source))
		}
		return err
	})
	if err != nil {
		return applied, wrapErr(err, "migrating up")
	}
	return applied, nil
}

// Down rolls back the most recently applied migration and returns it, or
// the zero Migration when none is applied.
func (m *Migrator) Down(ctx context.Context) (Migration, error) {
	var undone Migration
	err := m.run(ctx, func(p *goose.Provider) error {
		r, err := p.Down(ctx)
		if errors.Is(err, goose.ErrNoNextVersion) {
			return nil
		}
		if err != nil {
			return err
		}
		undone = migrationOf(r.Source)
		return nil
	})
	if err != nil {
		return Migration{}, wrapErr(err, "migrating down")
	}
	return undone, nil
}

// Status lists every known migration in version order and whether it is
// applied.
func (m *Migrator) Status(ctx context.Context) ([]MigrationStatus, error) {
	var out []MigrationStatus
	err := m.run(ctx, func(p *goose.Provider) error {
		list, err := p.Status(ctx)
		if err != nil {
			return err
		}
		for _, s := range list {
			out = append(out, MigrationStatus{
				Migration: migrationOf(s.Source),
				Applied:   s.State == goose.StateApplied,
				AppliedAt: s.AppliedAt,
			})
		}
		return nil
	})
	if err != nil {
		return nil, wrapErr(err, "reading migration status")
	}
	return out, nil
}

// run ensures the schema and calls fn with a goose provider on a
// database/sql handle borrowed from the pool, closed afterwards (which
// leaves the pool open).
func (m *Migrator) run(ctx context.Context, fn func(*goose.Provider) error) error {
	if err := m.ensureSchema(ctx); err != nil {
		return err
	}
	locker, err := lock.NewPostgresSessionLocker(
		lock.WithLockID(m.lockID()),
		lock.WithLockTimeout(1, 600), // retry every second for ten minutes
	)
	if err != nil {
		return err
	}
	opts := []goose.ProviderOption{
		goose.WithDisableGlobalRegistry(true),
		goose.WithSessionLocker(locker),
	}
	if m.logger != nil {
		opts = append(opts, goose.WithSlog(m.logger))
	} else {
		opts = append(opts, goose.WithLogger(goose.NopLogger()))
	}
	p, err := goose.NewProvider(goose.DialectPostgres, stdlib.OpenDBFromPool(m.pool), migrations.Postgres(), opts...)
	if err != nil {
		return err
	}
	return errors.Join(fn(p), p.Close())
}

// ensureSchema creates the schema unless it exists. It checks first because
// CREATE SCHEMA IF NOT EXISTS still needs the CREATE privilege on the
// database, which a role migrating an existing schema may lack.
func (m *Migrator) ensureSchema(ctx context.Context) error {
	var exists bool
	if err := m.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)`, m.schema).Scan(&exists); err != nil {
		return fmt.Errorf("error looking up schema: %w", err)
	}
	if exists {
		return nil
	}
	_, err := m.pool.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+pgx.Identifier{m.schema}.Sanitize())
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23505" {
		// Another instance created it at the same moment: IF NOT EXISTS
		// does not cover that race (pg_namespace's unique index does).
		return nil
	}
	if err != nil {
		return fmt.Errorf("error creating schema: %w", err)
	}
	return nil
}

// lockID is the advisory lock that serialises migrations of m's schema:
// migrations of other schemas in the same database do not wait for it.
func (m *Migrator) lockID() int64 {
	h := fnv.New64a()
	h.Write([]byte("nvent migrate " + m.schema))
	return int64(h.Sum64())
}

func migrationOf(s *goose.Source) Migration {
	if s == nil {
		return Migration{}
	}
	return Migration{Version: s.Version, Name: path.Base(s.Path)}
}
