package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/pressly/goose/v3"
	sqlitedriver "modernc.org/sqlite"

	"github.com/nvent/nvent/internal/domain"
	"github.com/nvent/nvent/migrations"
)

// TestWritesStoreTheCorrelationID makes every kind of write once with a
// context that carries a correlation id and once without: the event or
// change rows it adds hold the id (ReadOutbox returns it), or NULL (read
// as "").
func TestWritesStoreTheCorrelationID(t *testing.T) {
	s := newTestStore(t)
	writes := []struct {
		name  string
		table string
		rows  int
		write func(ctx context.Context, run int) error
	}{
		{"Append", OutboxEvents, 2, func(ctx context.Context, run int) error {
			_, err := s.Append(ctx, fmt.Sprintf("orders:%d", run), []domain.NewEvent{{Type: "a"}, {Type: "b"}}, domain.AppendOptions{})
			return err
		}},
		{"SaveDocument", OutboxChanges, 1, func(ctx context.Context, run int) error {
			_, err := s.SaveDocument(ctx, "users", fmt.Sprintf("u%d", run), []byte(`{"a":1}`), domain.SaveOptions{})
			return err
		}},
		{"DeleteDocument", OutboxChanges, 1, func(ctx context.Context, run int) error {
			return s.DeleteDocument(ctx, "users", fmt.Sprintf("u%d", run), domain.SaveOptions{})
		}},
		{"SetKey", OutboxChanges, 1, func(ctx context.Context, run int) error {
			_, err := s.SetKey(ctx, fmt.Sprintf("k%d", run), []byte(`1`), 0)
			return err
		}},
		{"IncrKey", OutboxChanges, 1, func(ctx context.Context, run int) error {
			_, err := s.IncrKey(ctx, fmt.Sprintf("k%d", run), 2)
			return err
		}},
		{"DeleteKey", OutboxChanges, 1, func(ctx context.Context, run int) error {
			return s.DeleteKey(ctx, fmt.Sprintf("k%d", run))
		}},
	}
	at := map[string]int64{}
	for run, corr := range []string{"req-1", ""} {
		ctx := t.Context()
		if corr != "" {
			ctx = domain.WithCorrelationID(ctx, corr)
		}
		for _, w := range writes {
			if err := w.write(ctx, run); err != nil {
				t.Fatalf("%s (correlation id %q): %v", w.name, corr, err)
			}
			rows := readOutbox(t, s, w.table, at[w.table])
			if len(rows) != w.rows {
				t.Fatalf("%s (correlation id %q) added %d rows to %s, want %d", w.name, corr, len(rows), w.table, w.rows)
			}
			at[w.table] = rows[len(rows)-1].Position
			for _, r := range rows {
				if r.CorrelationID != corr {
					t.Errorf("%s: %s row %d has correlation id %q, want %q", w.name, w.table, r.Position, r.CorrelationID, corr)
				}
				// Without one, the column is NULL, not "".
				var stored sql.NullString
				if err := s.reader.QueryRowContext(t.Context(), `SELECT correlation_id FROM `+w.table+` WHERE position = ?`,
					r.Position).Scan(&stored); err != nil {
					t.Fatal(err)
				}
				if want := (sql.NullString{String: corr, Valid: corr != ""}); stored != want {
					t.Errorf("%s: %s row %d stores %+v, want %+v", w.name, w.table, r.Position, stored, want)
				}
			}
		}
	}
}

// TestCorrelationMigrationDown rolls the correlation migration back and
// forth on a file the Store made: down drops the columns, up adds them
// back, and the Store writes again.
func TestCorrelationMigrationDown(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nvent.db")
	s := openTest(t, Config{Path: path})
	ctx := t.Context()
	if _, err := s.Append(domain.WithCorrelationID(ctx, "req-1"), "orders:1", []domain.NewEvent{{Type: "a"}}, domain.AppendOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	connector, err := sqlitedriver.NewConnector(path)
	if err != nil {
		t.Fatal(err)
	}
	db := sql.OpenDB(connector)
	defer db.Close()
	p, err := goose.NewProvider(goose.DialectSQLite3, db, migrations.SQLite(), goose.WithDisableGlobalRegistry(true))
	if err != nil {
		t.Fatal(err)
	}
	columns := func() int {
		t.Helper()
		var n int
		err := db.QueryRowContext(ctx, `SELECT (SELECT count(*) FROM pragma_table_info('events') WHERE name = 'correlation_id')
			+ (SELECT count(*) FROM pragma_table_info('changes') WHERE name = 'correlation_id')`).Scan(&n)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if got := columns(); got != 2 {
		t.Fatalf("%d correlation_id columns before down, want 2", got)
	}
	if _, err := p.DownTo(ctx, 2); err != nil {
		t.Fatalf("down to 2: %v", err)
	}
	if got := columns(); got != 0 {
		t.Fatalf("%d correlation_id columns after down, want none", got)
	}
	if _, err := p.Up(ctx); err != nil {
		t.Fatalf("up: %v", err)
	}
	if got := columns(); got != 2 {
		t.Fatalf("%d correlation_id columns after up again, want 2", got)
	}

	s = openTest(t, Config{Path: path})
	if _, err := s.SaveDocument(domain.WithCorrelationID(ctx, "req-2"), "users", "u1", []byte(`{}`), domain.SaveOptions{}); err != nil {
		t.Fatal(err)
	}
	if rows := readOutbox(t, s, OutboxChanges, 0); len(rows) != 1 || rows[0].CorrelationID != "req-2" {
		t.Fatalf("changes after the migration round trip: %+v", rows)
	}
}
