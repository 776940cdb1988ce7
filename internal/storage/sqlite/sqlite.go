// Package sqlite is the embedded storage.Store: one SQLite file, pure Go
// (modernc.org/sqlite, no cgo), the default of `nvent serve` on a fresh
// machine.
//
// A Store holds two connection pools on the file. The writer pool has a single
// connection whose transactions begin with BEGIN IMMEDIATE, so every write
// takes SQLite's write lock up front: writers of one process queue in
// database/sql for that connection and never meet SQLITE_BUSY, and writers of
// other processes wait for the lock up to the busy timeout. The reader pool
// has several query-only connections that, in WAL mode, read a consistent
// snapshot without blocking or being blocked by the writer.
//
// Because writers are serialised, events.position grows in commit order:
// a reader that checkpoints "position > last" skips nothing. Every document
// and key write also records a row of changes in its transaction, so that
// the Store is the outbox of a relay (ReadOutbox, Checkpoint,
// SaveCheckpoint, Committed).
//
// Durability: WAL with synchronous=NORMAL. A committed write survives the
// process being killed; a power failure or OS crash may lose the last
// commits (SQLite then comes back at an earlier, consistent state). FULL
// would fsync every commit and make appends about three times slower.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/pressly/goose/v3"
	sqlitedriver "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/nvent/nvent/internal/domain"
	"github.com/nvent/nvent/migrations"
)

// DefaultPath is where the database lives unless Config.Path says otherwise.
const DefaultPath = "./data/nvent.db"

// DefaultBusyTimeout is how long a write waits for another process's write
// lock before it fails as unavailable.
const DefaultBusyTimeout = 5 * time.Second

// Config configures a Store.
type Config struct {
	// Path is the database file; its directory is created if missing.
	// Default: DefaultPath.
	Path string
	// BusyTimeout is how long a statement waits for a lock held by another
	// connection (another process on the same file) before it fails as
	// unavailable. Default: DefaultBusyTimeout.
	BusyTimeout time.Duration
}

func (c *Config) setDefaults() {
	if c.Path == "" {
		c.Path = DefaultPath
	}
	if c.BusyTimeout == 0 {
		c.BusyTimeout = DefaultBusyTimeout
	}
}

// Validate reports whether c is usable. Path must name a file: not
// ":memory:", not a "file:" URI, and without '?', which would end the name.
func (c Config) Validate() error {
	switch {
	case c.Path == "":
		return errors.New("sqlite: path is empty")
	case c.Path == ":memory:" || strings.HasPrefix(c.Path, "file:"):
		return fmt.Errorf("sqlite: path %q must be a file path, not an in-memory database or URI", c.Path)
	case strings.ContainsRune(c.Path, '?'):
		return fmt.Errorf("sqlite: path %q must not contain '?'", c.Path)
	case c.BusyTimeout < time.Millisecond:
		return fmt.Errorf("sqlite: busy timeout %v must be at least 1ms", c.BusyTimeout)
	}
	return nil
}

// Store is the SQLite adapter of storage.Store. It is safe for concurrent
// use, also alongside other Stores (in this or other processes) on the same
// file. Create it with Open.
type Store struct {
	writer       *sql.DB       // one connection; transactions BEGIN IMMEDIATE
	reader       *sql.DB       // query-only connections
	appendStmts  *appendStmts  // prepared on writer
	insertChange *sql.Stmt     // prepared on writer
	committed    chan struct{} // capacity 1; see Committed
	path         string
	closed       atomic.Bool
}

// Open opens the database at cfg.Path, creating the file and its directory
// when missing, and applies the pending migrations before it returns.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(cfg.Path), 0o755); err != nil {
		return nil, fmt.Errorf("error creating the directory of sqlite database %q: %w", cfg.Path, err)
	}

	busy := strconv.FormatInt(cfg.BusyTimeout.Milliseconds(), 10)
	writerParams := url.Values{
		"_pragma": {
			"busy_timeout(" + busy + ")",
			"journal_mode(WAL)",
			"synchronous(NORMAL)",
			"foreign_keys(1)",
		},
		"_txlock": {"immediate"},
	}
	// Switching a new file to WAL takes a lock that SQLite does not wait
	// for (no busy handler): processes opening a new file together see
	// SQLITE_BUSY. Try again, within the busy timeout.
	writer, err := openPool(ctx, cfg.Path, writerParams)
	for deadline := time.Now().Add(cfg.BusyTimeout); err != nil && isBusy(err) && time.Now().Before(deadline); {
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(20 * time.Millisecond):
		}
		writer, err = openPool(ctx, cfg.Path, writerParams)
	}
	if err != nil {
		return nil, err
	}
	writer.SetMaxOpenConns(1)
	writer.SetMaxIdleConns(1)

	if err := migrate(ctx, writer); err != nil {
		_ = writer.Close()
		return nil, err
	}

	reader, err := openPool(ctx, cfg.Path, url.Values{
		"_pragma": {
			"busy_timeout(" + busy + ")",
			"query_only(1)",
		},
	})
	if err != nil {
		_ = writer.Close()
		return nil, err
	}
	n := max(4, runtime.GOMAXPROCS(0))
	reader.SetMaxOpenConns(n)
	reader.SetMaxIdleConns(n)

	stmts, err := prepareAppend(ctx, writer)
	if err != nil {
		_ = reader.Close()
		_ = writer.Close()
		return nil, err
	}
	insertChange, err := writer.PrepareContext(ctx, sqlInsertChange)
	if err != nil {
		stmts.close()
		_ = reader.Close()
		_ = writer.Close()
		return nil, fmt.Errorf("error preparing %q: %w", sqlInsertChange, err)
	}
	return &Store{writer: writer, reader: reader, appendStmts: stmts, insertChange: insertChange,
		committed: make(chan struct{}, 1), path: cfg.Path}, nil
}

// Provide opens a Store for google/wire: the cleanup closes it.
func Provide(ctx context.Context, cfg Config) (*Store, func(), error) {
	s, err := Open(ctx, cfg)
	if err != nil {
		return nil, nil, err
	}
	return s, func() { _ = s.Close() }, nil
}

// openPool opens a pool on path whose connections apply params, and checks
// that one connection opens.
func openPool(ctx context.Context, path string, params url.Values) (*sql.DB, error) {
	connector, err := sqlitedriver.NewConnector(path + "?" + params.Encode())
	if err != nil {
		return nil, fmt.Errorf("error configuring sqlite database %q: %w", path, err)
	}
	db := sql.OpenDB(connector)
	if err := db.PingContext(ctx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("error opening sqlite database %q: %w", path, err)
	}
	return db, nil
}

// migrate applies the pending migrations of migrations.SQLite.
//
// Several processes may open a new file at once. Each migration runs in its
// own write transaction, so a process that loses the race fails on a
// migration that another one has just committed, and changed nothing; it
// then tries again for as long as the database version keeps advancing.
func migrate(ctx context.Context, db *sql.DB) error {
	p, err := goose.NewProvider(goose.DialectSQLite3, db, migrations.SQLite(),
		goose.WithDisableGlobalRegistry(true))
	if err != nil {
		return fmt.Errorf("error preparing sqlite migrations: %w", err)
	}
	// p.Close would close db, which the Store keeps using.
	seen := int64(-1)
	for {
		_, err := p.Up(ctx)
		if err == nil {
			return nil
		}
		v, verr := p.GetDBVersion(ctx)
		if verr != nil || v <= seen {
			return fmt.Errorf("error applying sqlite migrations: %w", err)
		}
		seen = v
	}
}

// Ping reads the schema through a reader connection: it fails when the store
// is closed or the file cannot be read.
func (s *Store) Ping(ctx context.Context) error {
	var n int
	if err := s.reader.QueryRowContext(ctx, "SELECT count(*) FROM sqlite_schema").Scan(&n); err != nil {
		return s.fail(ctx, "pinging the sqlite store", err)
	}
	return nil
}

// Close closes both pools. Calls after the first return nil; other methods
// then fail as unavailable.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	s.appendStmts.close()
	_ = s.insertChange.Close()
	return errors.Join(s.reader.Close(), s.writer.Close())
}

// writeTx runs fn in a write transaction, which holds the database's write
// lock from its start, and commits unless fn fails. op names the work for
// error messages ("appending events").
func (s *Store) writeTx(ctx context.Context, op string, fn func(tx *sql.Tx) error) error {
	tx, err := s.writer.BeginTx(ctx, nil)
	if err != nil {
		return s.fail(ctx, op, err)
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return s.fail(ctx, op, err)
	}
	if err := tx.Commit(); err != nil {
		return s.fail(ctx, op, err)
	}
	return nil
}

// fail maps err, met while doing op, to what the Store returns: *domain.Error
// values pass through; a closed store, a cancelled or expired context, a busy
// or locked database and I/O failures become CodeUnavailable; a constraint
// violation becomes CodeConflict; anything else is wrapped as
// "error doing op".
func (s *Store) fail(ctx context.Context, op string, err error) error {
	var de *domain.Error
	if errors.As(err, &de) {
		return err
	}
	if s.closed.Load() {
		return domain.Wrap(domain.CodeUnavailable, err, "sqlite store is closed")
	}
	if ctxErr := ctx.Err(); ctxErr != nil {
		if !errors.Is(err, ctxErr) {
			err = fmt.Errorf("%w (%w)", err, ctxErr)
		}
		return domain.Wrap(domain.CodeUnavailable, fmt.Errorf("%s: %w", op, err), "sqlite store: "+ctxErr.Error())
	}
	if errors.Is(err, sql.ErrConnDone) {
		return domain.Wrap(domain.CodeUnavailable, fmt.Errorf("%s: %w", op, err), "sqlite store unavailable")
	}
	var se *sqlitedriver.Error
	if errors.As(err, &se) {
		switch se.Code() & 0xff { // the primary result code
		case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED:
			return domain.Wrap(domain.CodeUnavailable, fmt.Errorf("%s: %w", op, err), "sqlite store is busy")
		case sqlite3.SQLITE_IOERR, sqlite3.SQLITE_FULL, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_READONLY,
			sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_PROTOCOL, sqlite3.SQLITE_INTERRUPT:
			return domain.Wrap(domain.CodeUnavailable, fmt.Errorf("%s: %w", op, err), "sqlite store unavailable")
		case sqlite3.SQLITE_CONSTRAINT:
			return domain.Wrap(domain.CodeConflict, fmt.Errorf("%s: %w", op, err), "conflicting write")
		}
	}
	return fmt.Errorf("error %s: %w", op, err)
}

// Times are stored as integer Unix milliseconds, which round-trip exactly
// what domain.Now produces.

func toMillis(t time.Time) int64 { return t.UnixMilli() }

func fromMillis(ms int64) time.Time { return time.UnixMilli(ms).UTC() }

// placeholders returns "?, ?, …" with n marks.
func placeholders(n int) string {
	return strings.TrimSuffix(strings.Repeat("?, ", n), ", ")
}

// isBusy reports whether err is SQLite's SQLITE_BUSY or SQLITE_LOCKED.
func isBusy(err error) bool {
	var se *sqlitedriver.Error
	if !errors.As(err, &se) {
		return false
	}
	code := se.Code() & 0xff // the primary result code
	return code == sqlite3.SQLITE_BUSY || code == sqlite3.SQLITE_LOCKED
}
