package postgres_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/nvent/nvent/internal/domain"
)

// correlated is one row's id and stored correlation id (nil for NULL).
type correlated struct {
	ID            string
	CorrelationID *string
}

// correlationIDs returns the id and correlation_id of every row of table
// after position after, in position order.
func (e *changesEnv) correlationIDs(t *testing.T, table string, after int64) ([]correlated, int64) {
	t.Helper()
	rows, err := e.pool.Query(context.Background(), `SELECT position, id, correlation_id FROM `+
		pgx.Identifier{table}.Sanitize()+` WHERE position > $1 ORDER BY position`, after)
	if err != nil {
		t.Fatal(err)
	}
	last := after
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (correlated, error) {
		var c correlated
		err := row.Scan(&last, &c.ID, &c.CorrelationID)
		return c, err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out, last
}

// TestWritesStoreTheCorrelationID makes every kind of write, each through
// every statement that records it, once with a context that carries a
// correlation id and once without: the event or change rows it adds hold
// the id, or NULL.
func TestWritesStoreTheCorrelationID(t *testing.T) {
	t.Parallel()
	e := newChangesEnv(t)
	s := e.s
	zero := int64(0)
	writes := []struct {
		name  string
		table string
		rows  int
		write func(ctx context.Context, run int) error
	}{
		{"Append", "events", 2, func(ctx context.Context, run int) error {
			_, err := s.Append(ctx, fmt.Sprintf("orders:%d", run), []domain.NewEvent{{Type: "a"}, {Type: "b"}}, domain.AppendOptions{})
			return err
		}},
		{"Append at an expected seq", "events", 1, func(ctx context.Context, run int) error {
			two := int64(2)
			_, err := s.Append(ctx, fmt.Sprintf("orders:%d", run), []domain.NewEvent{{Type: "c"}}, domain.AppendOptions{ExpectedSeq: &two})
			return err
		}},
		{"SaveDocument", "changes", 1, func(ctx context.Context, run int) error {
			_, err := s.SaveDocument(ctx, "users", fmt.Sprintf("u%d", run), []byte(`{"a":1}`), domain.SaveOptions{})
			return err
		}},
		{"SaveDocument at an expected version", "changes", 1, func(ctx context.Context, run int) error {
			one := int64(1)
			_, err := s.SaveDocument(ctx, "users", fmt.Sprintf("u%d", run), []byte(`{"a":2}`), domain.SaveOptions{ExpectedVersion: &one})
			return err
		}},
		{"SaveDocument creating", "changes", 1, func(ctx context.Context, run int) error {
			_, err := s.SaveDocument(ctx, "users", fmt.Sprintf("new%d", run), []byte(`{}`), domain.SaveOptions{ExpectedVersion: &zero})
			return err
		}},
		{"DeleteDocument", "changes", 1, func(ctx context.Context, run int) error {
			return s.DeleteDocument(ctx, "users", fmt.Sprintf("u%d", run), domain.SaveOptions{})
		}},
		{"SetKey", "changes", 1, func(ctx context.Context, run int) error {
			_, err := s.SetKey(ctx, fmt.Sprintf("k%d", run), []byte(`1`), 0)
			return err
		}},
		{"IncrKey", "changes", 1, func(ctx context.Context, run int) error {
			_, err := s.IncrKey(ctx, fmt.Sprintf("k%d", run), 2)
			return err
		}},
		{"DeleteKey", "changes", 1, func(ctx context.Context, run int) error {
			return s.DeleteKey(ctx, fmt.Sprintf("k%d", run))
		}},
	}
	at := map[string]int64{}
	for run, corr := range []string{"req-1", ""} {
		ctx := context.Background()
		if corr != "" {
			ctx = domain.WithCorrelationID(ctx, corr)
		}
		for _, w := range writes {
			if err := w.write(ctx, run); err != nil {
				t.Fatalf("%s (correlation id %q): %v", w.name, corr, err)
			}
			rows, last := e.correlationIDs(t, w.table, at[w.table])
			at[w.table] = last
			if len(rows) != w.rows {
				t.Fatalf("%s (correlation id %q) added %d rows to %s, want %d", w.name, corr, len(rows), w.table, w.rows)
			}
			for _, r := range rows {
				switch {
				case corr == "" && r.CorrelationID != nil:
					t.Errorf("%s without a correlation id stored %q in %s row %s, want NULL", w.name, *r.CorrelationID, w.table, r.ID)
				case corr != "" && (r.CorrelationID == nil || *r.CorrelationID != corr):
					t.Errorf("%s stored %s in %s row %s, want %q", w.name, str(r.CorrelationID), w.table, r.ID, corr)
				}
			}
		}
	}
}

// TestARetriedAppendKeepsTheFirstCorrelationID: an append of ids already
// stored writes nothing, so the events keep the correlation id of the
// request that stored them.
func TestARetriedAppendKeepsTheFirstCorrelationID(t *testing.T) {
	t.Parallel()
	e := newChangesEnv(t)
	in := []domain.NewEvent{{ID: "e1", Type: "a"}}
	if _, err := e.s.Append(domain.WithCorrelationID(context.Background(), "first"), "orders:1", in, domain.AppendOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.s.Append(domain.WithCorrelationID(context.Background(), "retry"), "orders:1", in, domain.AppendOptions{}); err != nil {
		t.Fatal(err)
	}
	rows, _ := e.correlationIDs(t, "events", 0)
	if len(rows) != 1 || str(rows[0].CorrelationID) != "first" {
		t.Fatalf("events %+v, want e1 with correlation id first", rows)
	}
}
