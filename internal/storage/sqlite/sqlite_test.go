package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	sqlitedriver "modernc.org/sqlite"

	"github.com/nvent/nvent/internal/domain"
	"github.com/nvent/nvent/internal/storage"
	"github.com/nvent/nvent/internal/storage/storagetest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// openTest opens a Store on path and closes it when the test ends.
func openTest(t *testing.T, cfg Config) *Store {
	t.Helper()
	s, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Open(%+v): %v", cfg, err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func TestContract(t *testing.T) {
	t.Parallel()
	storagetest.Run(t, storagetest.Harness{
		New: func(t *testing.T) storage.Store {
			return openTest(t, Config{Path: filepath.Join(t.TempDir(), "nvent.db")})
		},
		Reopen: func(t *testing.T, s storage.Store) storage.Store {
			return openTest(t, Config{Path: s.(*Store).path})
		},
	})
}

func TestOpenCreatesMissingDirectory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a", "b", "nvent.db")
	s := openTest(t, Config{Path: path})
	if err := s.Ping(context.Background()); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("database file: %v", err)
	}
}

func TestOpenFailsClearlyWhenTheDirectoryCannotBeMade(t *testing.T) {
	file := filepath.Join(t.TempDir(), "not-a-dir")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(file, "data", "nvent.db")
	s, err := Open(context.Background(), Config{Path: path})
	if err == nil {
		_ = s.Close()
		t.Fatalf("Open(%q) succeeded under a regular file", path)
	}
	if !strings.Contains(err.Error(), "error creating the directory") || !strings.Contains(err.Error(), path) {
		t.Fatalf("error %q does not say which directory could not be created", err)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, path := range []string{":memory:", "file:x.db", "x.db?mode=ro"} {
		if _, err := Open(context.Background(), Config{Path: path}); err == nil {
			t.Errorf("Open(%q) accepted a path that is not a plain file path", path)
		}
	}
	cfg := Config{}
	cfg.setDefaults()
	if cfg.Path != DefaultPath || cfg.BusyTimeout != DefaultBusyTimeout || cfg.Validate() != nil {
		t.Fatalf("defaults = %+v, valid: %v", cfg, cfg.Validate())
	}
}

func TestReopenKeepsDataAndSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nvent.db")
	ctx := context.Background()
	s, err := Open(ctx, Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(ctx, "s", []domain.NewEvent{{ID: "e1", Type: "t", Data: json.RawMessage(`{"x":1}`)}}, domain.AppendOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SaveDocument(ctx, "c", "d", json.RawMessage(`1`), domain.SaveOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := openTest(t, Config{Path: path}) // migrations already applied: a no-op
	evs, err := s2.Read(ctx, "s", domain.ReadOptions{})
	if err != nil || len(evs) != 1 || evs[0].ID != "e1" || string(evs[0].Data) != `{"x":1}` {
		t.Fatalf("after reopening, read %+v, %v", evs, err)
	}
	if d, err := s2.GetDocument(ctx, "c", "d"); err != nil || d.Version != 1 {
		t.Fatalf("after reopening, document %+v, %v", d, err)
	}
}

// TestConcurrentOpenOfANewFile opens one new file from several Stores at
// once, as processes starting together on a fresh machine do: every Open must
// succeed, the first to migrate winning and the others finding the schema.
func TestConcurrentOpenOfANewFile(t *testing.T) {
	t.Parallel()
	var wg sync.WaitGroup
	for range 3 {
		path := filepath.Join(t.TempDir(), "nvent.db")
		for range 3 {
			wg.Go(func() {
				s, err := Open(context.Background(), Config{Path: path})
				if err != nil {
					t.Errorf("concurrent Open: %v", err)
					return
				}
				if err := s.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
		}
	}
	wg.Wait()
}

func TestPragmas(t *testing.T) {
	s := openTest(t, Config{Path: filepath.Join(t.TempDir(), "nvent.db")})
	ctx := context.Background()
	for _, c := range []struct {
		db     *sql.DB
		pragma string
		want   string
	}{
		{s.writer, "journal_mode", "wal"},
		{s.writer, "foreign_keys", "1"},
		{s.writer, "synchronous", "1"},
		{s.writer, "busy_timeout", "5000"},
		{s.reader, "query_only", "1"},
		{s.reader, "busy_timeout", "5000"},
	} {
		var got string
		if err := c.db.QueryRowContext(ctx, "PRAGMA "+c.pragma).Scan(&got); err != nil || got != c.want {
			t.Errorf("PRAGMA %s = %q, %v; want %q", c.pragma, got, err, c.want)
		}
	}
}

func TestClosedStoreIsUnavailable(t *testing.T) {
	s, err := Open(context.Background(), Config{Path: filepath.Join(t.TempDir(), "nvent.db")})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	ctx := context.Background()
	_, err = s.Append(ctx, "s", []domain.NewEvent{{Type: "t"}}, domain.AppendOptions{})
	if domain.ErrorCode(err) != domain.CodeUnavailable {
		t.Errorf("Append after Close: %v, want unavailable", err)
	}
	_, err = s.Read(ctx, "s", domain.ReadOptions{})
	if domain.ErrorCode(err) != domain.CodeUnavailable {
		t.Errorf("Read after Close: %v, want unavailable", err)
	}
	if err := s.Ping(ctx); domain.ErrorCode(err) != domain.CodeUnavailable {
		t.Errorf("Ping after Close: %v, want unavailable", err)
	}
}

// TestBusyIsUnavailable holds the write lock from another connection (as
// another process would) and checks that a write gives up after the busy
// timeout as unavailable, writing nothing, and succeeds once the lock is gone.
func TestBusyIsUnavailable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nvent.db")
	s := openTest(t, Config{Path: path, BusyTimeout: 50 * time.Millisecond})
	ctx := context.Background()

	connector, err := sqlitedriver.NewConnector(path)
	if err != nil {
		t.Fatal(err)
	}
	other := sql.OpenDB(connector)
	defer other.Close()
	conn, err := other.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		t.Fatal(err)
	}

	_, err = s.Append(ctx, "s", []domain.NewEvent{{Type: "t"}}, domain.AppendOptions{})
	if domain.ErrorCode(err) != domain.CodeUnavailable {
		t.Fatalf("Append while another connection holds the write lock: %v, want unavailable", err)
	}
	if evs, err := s.Read(ctx, "s", domain.ReadOptions{}); err != nil || len(evs) != 0 {
		t.Fatalf("reading while locked: %d events, %v; want none and no error", len(evs), err)
	}

	if _, err := conn.ExecContext(ctx, "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(ctx, "s", []domain.NewEvent{{Type: "t"}}, domain.AppendOptions{}); err != nil {
		t.Fatalf("Append after the lock is released: %v", err)
	}
}

func TestCancelledContextIsUnavailable(t *testing.T) {
	s := openTest(t, Config{Path: filepath.Join(t.TempDir(), "nvent.db")})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := s.Append(ctx, "s", []domain.NewEvent{{Type: "t"}}, domain.AppendOptions{})
	if domain.ErrorCode(err) != domain.CodeUnavailable || !errors.Is(err, context.Canceled) {
		t.Fatalf("Append with a cancelled context: %v, want unavailable caused by context.Canceled", err)
	}
}

// TestSetKeySweepsExpiredEntries checks the lazy cleanup: an expired entry
// nobody reads again is deleted by a later set of another key.
func TestSetKeySweepsExpiredEntries(t *testing.T) {
	s := openTest(t, Config{Path: filepath.Join(t.TempDir(), "nvent.db")})
	ctx := context.Background()
	past := toMillis(domain.Now().Add(-time.Minute))
	if _, err := s.writer.ExecContext(ctx, `INSERT INTO kv (key, value, expires_at) VALUES ('old', '1', ?)`, past); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetKey(ctx, "old"); domain.ErrorCode(err) != domain.CodeNotFound {
		t.Fatalf("expired key read as %v, want not found", err)
	}
	if _, err := s.SetKey(ctx, "new", json.RawMessage(`2`), time.Hour); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := s.reader.QueryRowContext(ctx, `SELECT count(*) FROM kv`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("kv holds %d rows (%v) after the sweep, want only the new key", n, err)
	}
}
