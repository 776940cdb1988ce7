package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// DefaultSchema is the schema the store uses when Config.Schema is empty.
const DefaultSchema = "public"

// Config configures the Postgres store.
type Config struct {
	// URL is a pgx connection string, such as
	// postgres://user:pass@host:5432/db?sslmode=disable. Its pgxpool
	// parameters (pool_max_conns, …) and connect_timeout apply.
	URL string
	// Schema holds nvent's tables and goose's version table. It is set as
	// the search_path of every connection (replacing any search_path given
	// in URL) and created by the Migrator when it does not exist. Default:
	// "public".
	Schema string
	// MaxConns caps the pool; 0 keeps pgxpool's default (pool_max_conns
	// from URL, or the greater of 4 and the number of CPUs).
	MaxConns int32
	// AutoMigrate makes Open apply pending migrations before it returns.
	// The zero Config does not migrate; DefaultConfig does.
	AutoMigrate bool
}

// DefaultConfig returns the configuration nvent starts from: schema
// "public", pgxpool's pool size, migrations applied on start.
func DefaultConfig() Config {
	return Config{Schema: DefaultSchema, AutoMigrate: true}
}

func (c *Config) setDefaults() {
	if c.Schema == "" {
		c.Schema = DefaultSchema
	}
}

// maxIdentifierLen is the longest Postgres identifier (NAMEDATALEN - 1).
const maxIdentifierLen = 63

// Validate reports a configuration that cannot work.
func (c Config) Validate() error {
	var errs []error
	if c.URL == "" {
		errs = append(errs, errors.New("postgres URL is empty"))
	}
	if c.Schema == "" {
		errs = append(errs, errors.New("postgres schema is empty"))
	}
	if len(c.Schema) > maxIdentifierLen {
		errs = append(errs, fmt.Errorf("postgres schema %q is longer than %d bytes", c.Schema, maxIdentifierLen))
	}
	if strings.ContainsRune(c.Schema, 0) {
		errs = append(errs, errors.New("postgres schema holds a NUL byte"))
	}
	if c.MaxConns < 0 {
		errs = append(errs, fmt.Errorf("postgres max conns must not be negative, got %d", c.MaxConns))
	}
	return errors.Join(errs...)
}

// NewPool returns a connection pool for cfg whose connections use cfg.Schema
// as their search_path, and a cleanup that closes it. The pool connects
// lazily: an unreachable server is reported by the first query (as
// unavailable by the Store), not here.
func NewPool(ctx context.Context, cfg Config) (*pgxpool.Pool, func(), error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, nil, fmt.Errorf("invalid postgres config: %w", err)
	}
	pc, err := pgxpool.ParseConfig(cfg.URL)
	if err != nil {
		// pgconn redacts the password from the message.
		return nil, nil, fmt.Errorf("invalid postgres URL: %w", err)
	}
	pc.ConnConfig.RuntimeParams["search_path"] = pgx.Identifier{cfg.Schema}.Sanitize()
	if cfg.MaxConns > 0 {
		pc.MaxConns = cfg.MaxConns
	}
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, nil, fmt.Errorf("error creating postgres pool: %w", err)
	}
	return pool, pool.Close, nil
}
