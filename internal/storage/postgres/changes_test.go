package postgres_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/nvent/nvent/internal/domain"
	"github.com/nvent/nvent/internal/storage/postgres"
)

// change is one row of the changes table.
type change struct {
	Position   int64
	TxID       string
	ID         string
	Kind       string
	Collection *string
	DocID      *string
	Key        *string
	Body       []byte
	At         time.Time
}

// changesEnv is a store on a fresh schema and a second pool on the same
// schema to look at its tables.
type changesEnv struct {
	s    *postgres.Store
	pool *pgxpool.Pool
	seen int // rows of changes already checked
}

func newChangesEnv(t *testing.T) *changesEnv {
	t.Helper()
	cfg := testConfig(t)
	s := open(t, cfg)
	pool, closePool, err := postgres.NewPool(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(closePool)
	return &changesEnv{s: s, pool: pool}
}

// changes returns every row of changes in position order.
func (e *changesEnv) changes(t *testing.T) []change {
	t.Helper()
	rows, err := e.pool.Query(context.Background(), `SELECT position, tx_id::text, id, kind,
	collection, doc_id, key, body::text, at FROM changes ORDER BY position`)
	if err != nil {
		t.Fatal(err)
	}
	all, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (change, error) {
		var c change
		var body *string
		err := row.Scan(&c.Position, &c.TxID, &c.ID, &c.Kind, &c.Collection, &c.DocID, &c.Key, &body, &c.At)
		if body != nil {
			c.Body = []byte(*body)
		}
		c.At = c.At.UTC()
		return c, err
	})
	if err != nil {
		t.Fatal(err)
	}
	return all
}

// next returns the one row written since the last call, failing t unless
// there is exactly one.
func (e *changesEnv) next(t *testing.T, after string) change {
	t.Helper()
	all := e.changes(t)
	if len(all) != e.seen+1 {
		t.Fatalf("after %s: %d new rows in changes, want 1: %+v", after, len(all)-e.seen, all[e.seen:])
	}
	e.seen++
	c := all[len(all)-1]
	if c.ID == "" {
		t.Fatalf("after %s: change without an id", after)
	}
	for _, other := range all[:len(all)-1] {
		if other.ID == c.ID {
			t.Fatalf("after %s: change id %s used twice", after, c.ID)
		}
	}
	return c
}

// none fails t if rows were added to changes since the last check.
func (e *changesEnv) none(t *testing.T, after string) {
	t.Helper()
	if all := e.changes(t); len(all) != e.seen {
		t.Fatalf("after %s: %d new rows in changes, want none: %+v", after, len(all)-e.seen, all[e.seen:])
	}
}

func str(p *string) string {
	if p == nil {
		return "<NULL>"
	}
	return *p
}

// sameJSON fails t unless a and b hold the same JSON value.
func sameJSON(t *testing.T, what string, got, want []byte) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("%s: body %s: %v", what, got, err)
	}
	if err := json.Unmarshal(want, &w); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(g, w) {
		t.Fatalf("%s: body %s, want the same JSON as %s", what, got, want)
	}
}

// checkSave checks a save change against the document the call returned:
// the body reads back as doc, is the same JSON as doc marshals to, and
// holds doc.Data byte for byte.
func checkSave(t *testing.T, c change, doc domain.Document) {
	t.Helper()
	if c.Kind != "save" || str(c.Collection) != doc.Collection || str(c.DocID) != doc.ID || c.Key != nil {
		t.Fatalf("save of %s/%s recorded as kind %s, collection %s, doc_id %s, key %s",
			doc.Collection, doc.ID, c.Kind, str(c.Collection), str(c.DocID), str(c.Key))
	}
	if !c.At.Equal(doc.UpdatedAt) {
		t.Fatalf("save recorded at %v, want updatedAt %v", c.At, doc.UpdatedAt)
	}
	var got domain.Document
	if err := json.Unmarshal(c.Body, &got); err != nil {
		t.Fatalf("save body %s: %v", c.Body, err)
	}
	if got.Collection != doc.Collection || got.ID != doc.ID || got.Version != doc.Version ||
		!bytes.Equal(got.Data, doc.Data) || !got.CreatedAt.Equal(doc.CreatedAt) || !got.UpdatedAt.Equal(doc.UpdatedAt) {
		t.Fatalf("save body %s reads back as %+v, want %+v", c.Body, got, doc)
	}
	want, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	sameJSON(t, "save", c.Body, want)
}

// checkSet checks a kv.set change against the entry the call returned.
func checkSet(t *testing.T, c change, e domain.KVEntry) {
	t.Helper()
	if c.Kind != "kv.set" || str(c.Key) != e.Key || c.Collection != nil || c.DocID != nil {
		t.Fatalf("set of %s recorded as kind %s, key %s, collection %s, doc_id %s",
			e.Key, c.Kind, str(c.Key), str(c.Collection), str(c.DocID))
	}
	var got domain.KVEntry
	if err := json.Unmarshal(c.Body, &got); err != nil {
		t.Fatalf("kv.set body %s: %v", c.Body, err)
	}
	if got.Key != e.Key || !bytes.Equal(got.Value, e.Value) || (got.ExpiresAt == nil) != (e.ExpiresAt == nil) ||
		(got.ExpiresAt != nil && !got.ExpiresAt.Equal(*e.ExpiresAt)) {
		t.Fatalf("kv.set body %s reads back as %+v, want %+v", c.Body, got, e)
	}
	want, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	sameJSON(t, "kv.set", c.Body, want)
}

// checkAt fails t unless c was recorded between from and to.
func checkAt(t *testing.T, c change, from, to time.Time) {
	t.Helper()
	if c.At.Before(from) || c.At.After(to) {
		t.Fatalf("%s recorded at %v, outside the call (%v to %v)", c.Kind, c.At, from, to)
	}
}

// TestChangesRecordEveryWrite: every successful document and key write adds
// exactly one row to changes, with its kind, its ids and, for saves and
// sets, the document or entry the call returned.
func TestChangesRecordEveryWrite(t *testing.T) {
	t.Parallel()
	e := newChangesEnv(t)
	s := e.s
	ctx := context.Background()
	data := json.RawMessage(`{"z": 1, "a": ["é", null, 1.50]}`)

	doc, err := s.SaveDocument(ctx, "orders", "o1", data, domain.SaveOptions{})
	if err != nil {
		t.Fatal(err)
	}
	checkSave(t, e.next(t, "a first save"), doc)
	doc, err = s.SaveDocument(ctx, "orders", "o1", json.RawMessage(`{"n":2}`), domain.SaveOptions{})
	if err != nil {
		t.Fatal(err)
	}
	checkSave(t, e.next(t, "a second save"), doc)
	doc, err = s.SaveDocument(ctx, "orders", "o1", json.RawMessage(`[3]`), domain.SaveOptions{ExpectedVersion: new(int64(2))})
	if err != nil {
		t.Fatal(err)
	}
	if doc.Version != 3 {
		t.Fatalf("update = %+v", doc)
	}
	checkSave(t, e.next(t, "an update at the expected version"), doc)
	doc, err = s.SaveDocument(ctx, "orders", "o2", json.RawMessage(`"new"`), domain.SaveOptions{ExpectedVersion: new(int64(0))})
	if err != nil {
		t.Fatal(err)
	}
	checkSave(t, e.next(t, "a create"), doc)

	for _, opts := range []domain.SaveOptions{{}, {ExpectedVersion: new(int64(3))}} {
		from := domain.Now()
		if err := s.DeleteDocument(ctx, "orders", "o1", opts); err != nil {
			t.Fatal(err)
		}
		c := e.next(t, "a delete")
		if c.Kind != "delete" || str(c.Collection) != "orders" || str(c.DocID) != "o1" || c.Key != nil || c.Body != nil {
			t.Fatalf("delete recorded as %+v", c)
		}
		checkAt(t, c, from, domain.Now())
		if _, err := s.SaveDocument(ctx, "orders", "o1", data, domain.SaveOptions{}); err != nil {
			t.Fatal(err)
		}
		e.next(t, "a save after a delete")
		if _, err := s.SaveDocument(ctx, "orders", "o1", data, domain.SaveOptions{}); err != nil {
			t.Fatal(err)
		}
		e.next(t, "a save after a delete")
		if _, err := s.SaveDocument(ctx, "orders", "o1", data, domain.SaveOptions{}); err != nil {
			t.Fatal(err)
		}
		e.next(t, "a save after a delete")
	}

	from := domain.Now()
	entry, err := s.SetKey(ctx, "cfg:theme", json.RawMessage(`{"dark": true, "x": "<&>"}`), 0)
	if err != nil {
		t.Fatal(err)
	}
	c := e.next(t, "a set")
	checkSet(t, c, entry)
	checkAt(t, c, from, domain.Now())
	if bytes.Contains(c.Body, []byte("expiresAt")) {
		t.Fatalf("kv.set body of an entry without expiry %s names expiresAt", c.Body)
	}
	entry, err = s.SetKey(ctx, "cfg:theme", json.RawMessage(`"light"`), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c = e.next(t, "a set with a TTL")
	checkSet(t, c, entry)
	if !bytes.Contains(c.Body, []byte(`"`+domain.FormatTime(*entry.ExpiresAt)+`"`)) {
		t.Fatalf("kv.set body %s does not hold the expiry as %s", c.Body, domain.FormatTime(*entry.ExpiresAt))
	}

	from = domain.Now()
	entry, err = s.IncrKey(ctx, "hits", 5)
	if err != nil {
		t.Fatal(err)
	}
	c = e.next(t, "an incr of an absent key")
	checkSet(t, c, entry)
	checkAt(t, c, from, domain.Now())
	if _, err := s.SetKey(ctx, "ttl-counter", json.RawMessage(`10`), time.Hour); err != nil {
		t.Fatal(err)
	}
	e.next(t, "a set")
	entry, err = s.IncrKey(ctx, "ttl-counter", -3)
	if err != nil || entry.ExpiresAt == nil {
		t.Fatalf("incr = %+v, %v", entry, err)
	}
	checkSet(t, e.next(t, "an incr of a key with a TTL"), entry)

	from = domain.Now()
	if err := s.DeleteKey(ctx, "hits"); err != nil {
		t.Fatal(err)
	}
	c = e.next(t, "a key delete")
	if c.Kind != "kv.delete" || str(c.Key) != "hits" || c.Collection != nil || c.DocID != nil || c.Body != nil {
		t.Fatalf("key delete recorded as %+v", c)
	}
	checkAt(t, c, from, domain.Now())
}

// TestFailedWritesRecordNothing: a write that conflicts, finds nothing to
// change or is given bad input adds no row to changes.
func TestFailedWritesRecordNothing(t *testing.T) {
	t.Parallel()
	e := newChangesEnv(t)
	s := e.s
	ctx := context.Background()
	if _, err := s.SaveDocument(ctx, "c", "d", json.RawMessage(`1`), domain.SaveOptions{}); err != nil {
		t.Fatal(err)
	}
	e.next(t, "a save")
	if _, err := s.SetKey(ctx, "name", json.RawMessage(`"x"`), 0); err != nil {
		t.Fatal(err)
	}
	e.next(t, "a set")
	if _, err := s.SetKey(ctx, "big", json.RawMessage(`9223372036854775807`), 0); err != nil {
		t.Fatal(err)
	}
	e.next(t, "a set")
	// An entry that has expired: not found for DeleteKey, which removes it
	// all the same.
	if _, err := e.pool.Exec(ctx, `INSERT INTO kv (key, value, expires_at, updated_at)
VALUES ('gone', '1', now() - interval '1 hour', now() - interval '2 hours')`); err != nil {
		t.Fatal(err)
	}

	save := func(collection, id, data string, expected *int64) func() error {
		return func() error {
			_, err := s.SaveDocument(ctx, collection, id, json.RawMessage(data), domain.SaveOptions{ExpectedVersion: expected})
			return err
		}
	}
	del := func(collection, id string, expected *int64) func() error {
		return func() error {
			return s.DeleteDocument(ctx, collection, id, domain.SaveOptions{ExpectedVersion: expected})
		}
	}
	set := func(key, value string, ttl time.Duration) func() error {
		return func() error {
			_, err := s.SetKey(ctx, key, json.RawMessage(value), ttl)
			return err
		}
	}
	incr := func(key string, delta int64) func() error {
		return func() error {
			_, err := s.IncrKey(ctx, key, delta)
			return err
		}
	}
	for _, tc := range []struct {
		name string
		call func() error
		code domain.Code
	}{
		{"a save at the wrong version", save("c", "d", `2`, new(int64(5))), domain.CodeConflict},
		{"a create of an existing document", save("c", "d", `2`, new(int64(0))), domain.CodeConflict},
		{"an update of a missing document", save("c", "missing", `2`, new(int64(1))), domain.CodeConflict},
		{"a delete at the wrong version", del("c", "d", new(int64(5))), domain.CodeConflict},
		{"a delete of a missing document", del("c", "missing", nil), domain.CodeNotFound},
		{"a delete at a version of a missing document", del("c", "missing", new(int64(1))), domain.CodeNotFound},
		{"a delete of a missing key", func() error { return s.DeleteKey(ctx, "missing") }, domain.CodeNotFound},
		{"a delete of an expired key", func() error { return s.DeleteKey(ctx, "gone") }, domain.CodeNotFound},
		{"an incr of a string", incr("name", 1), domain.CodeConflict},
		{"an incr that overflows", incr("big", 1), domain.CodeConflict},
		{"a save to a bad collection", save("a*", "d", `1`, nil), domain.CodeInvalidInput},
		{"a save with a bad id", save("c", "d/e", `1`, nil), domain.CodeInvalidInput},
		{"a save of invalid JSON", save("c", "d", `{`, nil), domain.CodeInvalidInput},
		{"a save of nothing", save("c", "d", ``, nil), domain.CodeInvalidInput},
		{"a save at a negative version", save("c", "d", `1`, new(int64(-1))), domain.CodeInvalidInput},
		{"a delete with a bad id", del("c", "", nil), domain.CodeInvalidInput},
		{"a set of a bad key", set("a*", `1`, 0), domain.CodeInvalidInput},
		{"a set of invalid JSON", set("k", `{`, 0), domain.CodeInvalidInput},
		{"a set with a negative TTL", set("k", `1`, -time.Second), domain.CodeInvalidInput},
		{"an incr of a bad key", incr("", 1), domain.CodeInvalidInput},
		{"a delete of a bad key", func() error { return s.DeleteKey(ctx, "a b") }, domain.CodeInvalidInput},
	} {
		if err := tc.call(); domain.ErrorCode(err) != tc.code {
			t.Fatalf("%s = %v, want %s", tc.name, err, tc.code)
		}
		e.none(t, tc.name)
	}
	var n int
	if err := e.pool.QueryRow(ctx, `SELECT count(*) FROM kv WHERE key = 'gone'`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("the expired row is still there (%d, %v)", n, err)
	}
}

// TestFailingChangeUndoesTheWrite: the change is written in the same
// statement or transaction as the write, so a change that cannot be
// written leaves the document or entry as it was.
func TestFailingChangeUndoesTheWrite(t *testing.T) {
	t.Parallel()
	e := newChangesEnv(t)
	s := e.s
	ctx := context.Background()
	doc, err := s.SaveDocument(ctx, "c", "d", json.RawMessage(`1`), domain.SaveOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetKey(ctx, "n", json.RawMessage(`1`), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := e.pool.Exec(ctx, `ALTER TABLE changes ADD CONSTRAINT refuse CHECK (false) NOT VALID`); err != nil {
		t.Fatal(err)
	}
	for name, call := range map[string]func() error{
		"save": func() error {
			_, err := s.SaveDocument(ctx, "c", "d", json.RawMessage(`2`), domain.SaveOptions{})
			return err
		},
		"create": func() error {
			_, err := s.SaveDocument(ctx, "c", "new", json.RawMessage(`2`), domain.SaveOptions{ExpectedVersion: new(int64(0))})
			return err
		},
		"update": func() error {
			_, err := s.SaveDocument(ctx, "c", "d", json.RawMessage(`2`), domain.SaveOptions{ExpectedVersion: new(int64(1))})
			return err
		},
		"delete": func() error { return s.DeleteDocument(ctx, "c", "d", domain.SaveOptions{}) },
		"set": func() error {
			_, err := s.SetKey(ctx, "n", json.RawMessage(`2`), 0)
			return err
		},
		"incr": func() error {
			_, err := s.IncrKey(ctx, "n", 1)
			return err
		},
		"incr of an absent key": func() error {
			_, err := s.IncrKey(ctx, "absent", 1)
			return err
		},
		"key delete": func() error { return s.DeleteKey(ctx, "n") },
	} {
		if err := call(); err == nil {
			t.Errorf("%s succeeded without its change", name)
		}
	}
	got, err := s.GetDocument(ctx, "c", "d")
	if err != nil || got.Version != doc.Version || string(got.Data) != `1` {
		t.Fatalf("document after failed writes = %+v, %v; want %+v", got, err, doc)
	}
	if _, err := s.GetDocument(ctx, "c", "new"); domain.ErrorCode(err) != domain.CodeNotFound {
		t.Fatalf("a failed create left the document: %v", err)
	}
	if entry, err := s.GetKey(ctx, "n"); err != nil || string(entry.Value) != `1` {
		t.Fatalf("entry after failed writes = %+v, %v; want 1", entry, err)
	}
	if _, err := s.GetKey(ctx, "absent"); domain.ErrorCode(err) != domain.CodeNotFound {
		t.Fatalf("a failed incr left the key: %v", err)
	}
}

// TestConcurrentSavesRecordEachSuccess: writers racing on one document with
// expected versions record one change per save that succeeded, with the
// versions 1 to the last.
func TestConcurrentSavesRecordEachSuccess(t *testing.T) {
	t.Parallel()
	e := newChangesEnv(t)
	s := e.s
	ctx := context.Background()
	if _, err := s.SaveDocument(ctx, "c", "d", json.RawMessage(`0`), domain.SaveOptions{ExpectedVersion: new(int64(0))}); err != nil {
		t.Fatal(err)
	}
	const workers, each = 8, 25
	var saved, conflicts atomic.Int64
	saved.Add(1)
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Go(func() {
			for range each {
				doc, err := s.GetDocument(ctx, "c", "d")
				if err != nil {
					errs <- err
					return
				}
				_, err = s.SaveDocument(ctx, "c", "d", json.RawMessage(`1`), domain.SaveOptions{ExpectedVersion: &doc.Version})
				switch {
				case err == nil:
					saved.Add(1)
				case domain.ErrorCode(err) == domain.CodeConflict:
					conflicts.Add(1)
				default:
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	doc, err := s.GetDocument(ctx, "c", "d")
	if err != nil {
		t.Fatal(err)
	}
	if doc.Version != saved.Load() {
		t.Fatalf("document at version %d after %d successful saves", doc.Version, saved.Load())
	}
	var versions []int64
	for _, c := range e.changes(t) {
		var d domain.Document
		if err := json.Unmarshal(c.Body, &d); err != nil || c.Kind != "save" {
			t.Fatalf("change %+v: %v", c, err)
		}
		versions = append(versions, d.Version)
	}
	slices.Sort(versions)
	if int64(len(versions)) != saved.Load() || versions[0] != 1 || versions[len(versions)-1] != saved.Load() {
		t.Fatalf("%d changes with versions %v for %d successful saves (%d conflicts)",
			len(versions), versions, saved.Load(), conflicts.Load())
	}
	t.Logf("%d saves, %d conflicts", saved.Load(), conflicts.Load())
}

// TestChangeTxIDOrderFollowsWrites: writers racing on a document and on a
// key, from the moment neither exists, get transaction ids in the order of
// their writes, so that a relay reading changes in (tx_id, position) order
// sees each document's versions, and each key's values, in order.
func TestChangeTxIDOrderFollowsWrites(t *testing.T) {
	t.Parallel()
	e := newChangesEnv(t)
	s := e.s
	ctx := context.Background()
	const rounds, workers, each = 20, 8, 3
	for r := range rounds {
		id := fmt.Sprintf("r%d", r)
		start := make(chan struct{})
		var wg sync.WaitGroup
		errs := make(chan error, 2*workers)
		for range workers {
			wg.Go(func() {
				<-start
				for range each {
					if _, err := s.SaveDocument(ctx, "c", id, json.RawMessage(`1`), domain.SaveOptions{}); err != nil {
						errs <- err
						return
					}
				}
			})
			wg.Go(func() {
				<-start
				for range each {
					if _, err := s.IncrKey(ctx, id, 1); err != nil {
						errs <- err
						return
					}
				}
			})
		}
		close(start)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
	}
	rows, err := e.pool.Query(ctx, `SELECT kind, body::text FROM changes ORDER BY tx_id, position`)
	if err != nil {
		t.Fatal(err)
	}
	last := make(map[string]int64) // the last version or value of each document or key
	var kind, body string
	_, err = pgx.ForEachRow(rows, []any{&kind, &body}, func() error {
		var name string
		var n int64
		switch kind {
		case "save":
			var d domain.Document
			if err := json.Unmarshal([]byte(body), &d); err != nil {
				return err
			}
			name, n = "document "+d.ID, d.Version
		case "kv.set":
			var k domain.KVEntry
			if err := json.Unmarshal([]byte(body), &k); err != nil {
				return err
			}
			if err := json.Unmarshal(k.Value, &n); err != nil {
				return err
			}
			name = "key " + k.Key
		default:
			return fmt.Errorf("unexpected change %s", kind)
		}
		if n != last[name]+1 {
			t.Errorf("in (tx_id, position) order, %s has %d after %d", name, n, last[name])
		}
		last[name] = n
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(last) != 2*rounds {
		t.Fatalf("changes of %d documents and keys, want %d", len(last), 2*rounds)
	}
	for name, n := range last {
		if n != workers*each {
			t.Errorf("%s ends at %d, want %d", name, n, workers*each)
		}
	}
}
