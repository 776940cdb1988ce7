// Package storagetest is the contract every storage.Store adapter must meet,
// written once and run against each adapter (memory, sqlite, postgres) from
// that adapter's own tests, the way Watermill's pubsub/tests suite is run by
// every Pub/Sub.
package storagetest

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nvent/nvent/internal/domain"
	"github.com/nvent/nvent/internal/storage"
)

// Harness tells the suite how to make stores of one adapter.
type Harness struct {
	// New returns an empty store, isolated from every other test's, and
	// closed by the harness (t.Cleanup) when the test ends.
	New func(t *testing.T) storage.Store
	// Reopen, when set, returns a second handle to the same data as s (a new
	// process opening the same database). Persistent adapters set it; the
	// suite then checks that idempotency and TTLs survive a restart.
	Reopen func(t *testing.T, s storage.Store) storage.Store
}

// Run runs the whole contract against h.
func Run(t *testing.T, h Harness) {
	t.Run("Events", func(t *testing.T) { runEvents(t, h) })
	t.Run("Documents", func(t *testing.T) { runDocuments(t, h) })
	t.Run("KV", func(t *testing.T) { runKV(t, h) })
	t.Run("Ping", func(t *testing.T) {
		t.Parallel()
		if err := h.New(t).Ping(ctx(t)); err != nil {
			t.Fatalf("Ping: %v", err)
		}
	})
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return c
}

func i64(n int64) *int64 { return &n }

// wantCode fails t unless err carries code.
func wantCode(t *testing.T, err error, code domain.Code) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %s", code)
	}
	if got := domain.ErrorCode(err); got != code {
		t.Fatalf("got error %q with code %s, want code %s", err, got, code)
	}
}

func mustAppend(t *testing.T, s storage.Store, subject string, evs ...domain.NewEvent) domain.AppendResult {
	t.Helper()
	res, err := s.Append(ctx(t), subject, evs, domain.AppendOptions{})
	if err != nil {
		t.Fatalf("Append(%q): %v", subject, err)
	}
	return res
}

func mustRead(t *testing.T, s storage.Store, subject string, opts domain.ReadOptions) []domain.Event {
	t.Helper()
	evs, err := s.Read(ctx(t), subject, opts)
	if err != nil {
		t.Fatalf("Read(%q): %v", subject, err)
	}
	return evs
}

func seqs(evs []domain.Event) []int64 {
	out := make([]int64, len(evs))
	for i, e := range evs {
		out[i] = e.Seq
	}
	return out
}

func sameSeqs(got []domain.Event, want ...int64) bool {
	g := seqs(got)
	if len(g) != len(want) {
		return false
	}
	for i := range g {
		if g[i] != want[i] {
			return false
		}
	}
	return true
}

func ev(typ string, data string) domain.NewEvent {
	return domain.NewEvent{Type: typ, Data: json.RawMessage(data)}
}

func runEvents(t *testing.T, h Harness) {
	t.Run("AssignsSeqIDAndTimestamp", func(t *testing.T) {
		t.Parallel()
		s := h.New(t)
		before := time.Now().Add(-time.Second)
		res := mustAppend(t, s, "orders:42", ev("order.placed", `{"total": 10}`), ev("order.paid", ``))
		if res.PreviousSeq != 0 || len(res.Events) != 2 || len(res.Appended()) != 2 {
			t.Fatalf("result = %+v, want two new events after seq 0", res)
		}
		for i, e := range res.Events {
			if e.Seq != int64(i+1) || e.Subject != "orders:42" || e.ID == "" {
				t.Fatalf("event %d = %+v", i, e)
			}
			if e.TS.Location() != time.UTC || e.TS.Before(before) || e.TS.Nanosecond()%int(time.Millisecond) != 0 {
				t.Fatalf("ts %v is not a recent UTC time in whole milliseconds", e.TS)
			}
		}
		if string(res.Events[0].Data) != `{"total":10}` || string(res.Events[1].Data) != `null` {
			t.Fatalf("data = %s, %s; want compacted JSON and null", res.Events[0].Data, res.Events[1].Data)
		}
		got := mustRead(t, s, "orders:42", domain.ReadOptions{})
		if len(got) != 2 {
			t.Fatalf("read %d events, want 2", len(got))
		}
		for i := range got {
			if !eventsEqual(got[i], res.Events[i]) {
				t.Fatalf("read back %+v, appended %+v", got[i], res.Events[i])
			}
		}
	})

	t.Run("KeepsAllFields", func(t *testing.T) {
		t.Parallel()
		s := h.New(t)
		in := domain.NewEvent{ID: "e-1", Type: "step.completed", RunID: "r9", FlowName: "billing",
			StepName: "charge", StepID: "s1", Attempt: 3, Data: json.RawMessage(`{"a":[1,2,{"b":null}]}`)}
		mustAppend(t, s, "things:x", in)
		got := mustRead(t, s, "things:x", domain.ReadOptions{})[0]
		if got.ID != "e-1" || got.Type != in.Type || got.RunID != "r9" || got.FlowName != "billing" ||
			got.StepName != "charge" || got.StepID != "s1" || got.Attempt != 3 || string(got.Data) != string(in.Data) {
			t.Fatalf("read back %+v, want the fields of %+v", got, in)
		}
	})

	t.Run("RunIDDefaultsFromFlowSubject", func(t *testing.T) {
		t.Parallel()
		s := h.New(t)
		res := mustAppend(t, s, "nq:flow:run-7", ev("flow.start", `{}`), domain.NewEvent{Type: "x", RunID: "other"})
		if res.Events[0].RunID != "run-7" || res.Events[1].RunID != "other" {
			t.Fatalf("runIds = %q, %q; want run-7 (from subject) and other (given)", res.Events[0].RunID, res.Events[1].RunID)
		}
	})

	t.Run("SubjectsAreIndependent", func(t *testing.T) {
		t.Parallel()
		s := h.New(t)
		mustAppend(t, s, "a", ev("t", `1`))
		mustAppend(t, s, "a", ev("t", `2`))
		res := mustAppend(t, s, "b", ev("t", `3`))
		if res.Events[0].Seq != 1 {
			t.Fatalf("first event of subject b has seq %d, want 1", res.Events[0].Seq)
		}
	})

	t.Run("ExpectedSeq", func(t *testing.T) {
		t.Parallel()
		s := h.New(t)
		c := ctx(t)
		if _, err := s.Append(c, "acct:1", []domain.NewEvent{ev("opened", `{}`)}, domain.AppendOptions{ExpectedSeq: i64(0)}); err != nil {
			t.Fatalf("append to a new subject with expectedSeq 0: %v", err)
		}
		_, err := s.Append(c, "acct:1", []domain.NewEvent{ev("x", `{}`), ev("y", `{}`)}, domain.AppendOptions{ExpectedSeq: i64(0)})
		wantCode(t, err, domain.CodeConflict)
		_, err = s.Append(c, "acct:1", []domain.NewEvent{ev("x", `{}`)}, domain.AppendOptions{ExpectedSeq: i64(5)})
		wantCode(t, err, domain.CodeConflict)
		if got := mustRead(t, s, "acct:1", domain.ReadOptions{}); !sameSeqs(got, 1) {
			t.Fatalf("after conflicts the subject holds seqs %v, want [1]", seqs(got))
		}
		res, err := s.Append(c, "acct:1", []domain.NewEvent{ev("x", `{}`), ev("y", `{}`)}, domain.AppendOptions{ExpectedSeq: i64(1)})
		if err != nil || !sameSeqs(res.Events, 2, 3) {
			t.Fatalf("append with the right expectedSeq: %v, seqs %v", err, seqs(res.Events))
		}
		// A conflict must not have consumed seqs.
		res = mustAppend(t, s, "acct:1", ev("z", `{}`))
		if res.Events[0].Seq != 4 {
			t.Fatalf("next seq = %d, want 4", res.Events[0].Seq)
		}
	})

	t.Run("IdempotentByID", func(t *testing.T) {
		t.Parallel()
		s := h.New(t)
		c := ctx(t)
		first := mustAppend(t, s, "pay:1", domain.NewEvent{ID: "p-1", Type: "paid", Data: json.RawMessage(`{"n":1}`)})
		again, err := s.Append(c, "pay:1", []domain.NewEvent{{ID: "p-1", Type: "paid", Data: json.RawMessage(`{"n":2}`)}},
			domain.AppendOptions{ExpectedSeq: i64(0)}) // a retry: expectedSeq is stale, but nothing new is written
		if err != nil {
			t.Fatalf("re-append of a stored id: %v", err)
		}
		if len(again.Appended()) != 0 || !eventsEqual(again.Events[0], first.Events[0]) {
			t.Fatalf("re-append returned %+v (appended %d), want the stored %+v", again.Events[0], len(again.Appended()), first.Events[0])
		}
		// A batch mixing a stored id and a new one writes only the new one.
		mixed := mustAppend(t, s, "pay:1", domain.NewEvent{ID: "p-1", Type: "paid"}, domain.NewEvent{ID: "p-2", Type: "paid"})
		if !sameSeqs(mixed.Events, 1, 2) || len(mixed.Appended()) != 1 || mixed.Appended()[0].ID != "p-2" {
			t.Fatalf("mixed batch = %+v", mixed)
		}
		// The same id in another subject is another event.
		other := mustAppend(t, s, "pay:2", domain.NewEvent{ID: "p-1", Type: "paid"})
		if len(other.Appended()) != 1 {
			t.Fatalf("id p-1 in another subject was not appended")
		}
		if got := mustRead(t, s, "pay:1", domain.ReadOptions{}); !sameSeqs(got, 1, 2) {
			t.Fatalf("subject holds seqs %v, want [1 2]", seqs(got))
		}
		if h.Reopen != nil {
			s2 := h.Reopen(t, s)
			res, err := s2.Append(c, "pay:1", []domain.NewEvent{{ID: "p-2", Type: "paid"}}, domain.AppendOptions{})
			if err != nil || len(res.Appended()) != 0 || res.Events[0].Seq != 2 {
				t.Fatalf("after reopening, re-append of p-2 = %+v, %v; want the stored seq 2", res, err)
			}
		}
	})

	t.Run("ConcurrentDuplicateIDsStoreOnce", func(t *testing.T) {
		t.Parallel()
		s := h.New(t)
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for range 8 {
			wg.Go(func() {
				if _, err := s.Append(ctx(t), "dup", []domain.NewEvent{{ID: "same", Type: "t"}}, domain.AppendOptions{}); err != nil {
					errs <- err
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("concurrent append of one id: %v", err)
		}
		if got := mustRead(t, s, "dup", domain.ReadOptions{}); len(got) != 1 {
			t.Fatalf("id stored %d times, want once", len(got))
		}
	})

	t.Run("ConcurrentAppendersGetGaplessSeqs", func(t *testing.T) {
		t.Parallel()
		s := h.New(t)
		const workers, each = 8, 500
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		for w := range workers {
			wg.Go(func() {
				for i := range each {
					if _, err := s.Append(ctx(t), "hot", []domain.NewEvent{ev("tick", fmt.Sprintf(`{"w":%d,"i":%d}`, w, i))}, domain.AppendOptions{}); err != nil {
						errs <- fmt.Errorf("worker %d append %d: %w", w, i, err)
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
		var all []domain.Event
		for {
			page := mustRead(t, s, "hot", domain.ReadOptions{After: int64(len(all)), Limit: domain.MaxReadLimit})
			if len(page) == 0 {
				break
			}
			all = append(all, page...)
		}
		if len(all) != workers*each {
			t.Fatalf("read %d events, want %d", len(all), workers*each)
		}
		lastI := make(map[float64]float64)
		for i, e := range all {
			if e.Seq != int64(i+1) {
				t.Fatalf("event %d has seq %d: duplicate or missing seq", i, e.Seq)
			}
			var d struct{ W, I float64 }
			if err := json.Unmarshal(e.Data, &d); err != nil {
				t.Fatal(err)
			}
			if prev, ok := lastI[d.W]; ok && d.I <= prev {
				t.Fatalf("worker %v's append %v stored after its append %v", d.W, d.I, prev)
			}
			lastI[d.W] = d.I
		}
	})

	t.Run("BadInputWritesNothing", func(t *testing.T) {
		t.Parallel()
		s := h.New(t)
		c := ctx(t)
		mustAppend(t, s, "ok", ev("t", `1`))
		cases := []struct {
			name    string
			subject string
			events  []domain.NewEvent
			code    domain.Code
		}{
			{"empty subject", "", []domain.NewEvent{ev("t", `1`)}, domain.CodeInvalidInput},
			{"star in subject", "orders:*", []domain.NewEvent{ev("t", `1`)}, domain.CodeInvalidInput},
			{"space in subject", "a b", []domain.NewEvent{ev("t", `1`)}, domain.CodeInvalidInput},
			{"slash in subject", "a/b", []domain.NewEvent{ev("t", `1`)}, domain.CodeInvalidInput},
			{"subject too long", strings.Repeat("s", domain.MaxNameLen+1), []domain.NewEvent{ev("t", `1`)}, domain.CodeInvalidInput},
			{"no events", "ok", nil, domain.CodeInvalidInput},
			{"missing type", "ok", []domain.NewEvent{ev("t", `1`), {Data: json.RawMessage(`1`)}}, domain.CodeInvalidInput},
			{"broken JSON data", "ok", []domain.NewEvent{ev("t", `1`), ev("t", `{"a":`)}, domain.CodeInvalidInput},
			{"bad id", "ok", []domain.NewEvent{{ID: "a b", Type: "t"}}, domain.CodeInvalidInput},
			{"same id twice", "ok", []domain.NewEvent{{ID: "x", Type: "t"}, {ID: "x", Type: "t"}}, domain.CodeInvalidInput},
			{"negative attempt", "ok", []domain.NewEvent{{Type: "t", Attempt: -1}}, domain.CodeInvalidInput},
			{"batch too large", "ok", make([]domain.NewEvent, domain.MaxBatch+1), domain.CodeTooLarge},
		}
		for _, tc := range cases {
			_, err := s.Append(c, tc.subject, tc.events, domain.AppendOptions{})
			if domain.ErrorCode(err) != tc.code {
				t.Errorf("%s: got %v, want code %s", tc.name, err, tc.code)
			}
		}
		if got := mustRead(t, s, "ok", domain.ReadOptions{}); !sameSeqs(got, 1) {
			t.Fatalf("after bad appends the subject holds seqs %v, want [1]", seqs(got))
		}
		_, err := s.Read(c, "bad*", domain.ReadOptions{})
		wantCode(t, err, domain.CodeInvalidInput)
		_, err = s.Read(c, "ok", domain.ReadOptions{Order: "sideways"})
		wantCode(t, err, domain.CodeInvalidInput)
		_, err = s.Read(c, "ok", domain.ReadOptions{After: -1})
		wantCode(t, err, domain.CodeInvalidInput)
	})

	t.Run("ReadSelects", func(t *testing.T) {
		t.Parallel()
		s := h.New(t)
		for i := 1; i <= 10; i++ {
			typ := "odd"
			if i%2 == 0 {
				typ = "even"
			}
			mustAppend(t, s, "r", ev(typ, fmt.Sprint(i)))
		}
		checks := []struct {
			name string
			opts domain.ReadOptions
			want []int64
		}{
			{"all", domain.ReadOptions{}, []int64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}},
			{"after", domain.ReadOptions{After: 7}, []int64{8, 9, 10}},
			{"limit", domain.ReadOptions{After: 2, Limit: 3}, []int64{3, 4, 5}},
			{"before", domain.ReadOptions{Before: 3}, []int64{1, 2}},
			{"types", domain.ReadOptions{Types: []string{"even"}}, []int64{2, 4, 6, 8, 10}},
			{"two types", domain.ReadOptions{Types: []string{"even", "odd"}, Limit: 2}, []int64{1, 2}},
			{"desc", domain.ReadOptions{Order: domain.Desc, Limit: 3}, []int64{10, 9, 8}},
			{"desc after", domain.ReadOptions{Order: domain.Desc, After: 8}, []int64{10, 9}},
			{"desc before", domain.ReadOptions{Order: domain.Desc, Before: 4, Types: []string{"odd"}}, []int64{3, 1}},
			{"past the end", domain.ReadOptions{After: 10}, []int64{}},
		}
		for _, c := range checks {
			if got := mustRead(t, s, "r", c.opts); !sameSeqs(got, c.want...) {
				t.Errorf("%s: seqs %v, want %v", c.name, seqs(got), c.want)
			}
		}
		if got := mustRead(t, s, "never-written", domain.ReadOptions{}); len(got) != 0 {
			t.Fatalf("unknown subject read %d events", len(got))
		}
	})
}

// eventsEqual compares two events field by field (times by instant).
func eventsEqual(a, b domain.Event) bool {
	return a.ID == b.ID && a.Subject == b.Subject && a.Seq == b.Seq && a.Type == b.Type &&
		a.RunID == b.RunID && a.FlowName == b.FlowName && a.StepName == b.StepName &&
		a.StepID == b.StepID && a.Attempt == b.Attempt && string(a.Data) == string(b.Data) && a.TS.Equal(b.TS)
}

func runDocuments(t *testing.T, h Harness) {
	t.Run("SaveGetVersions", func(t *testing.T) {
		t.Parallel()
		s := h.New(t)
		c := ctx(t)
		d1, err := s.SaveDocument(c, "users", "u1", json.RawMessage(`{"name": "Ann"}`), domain.SaveOptions{})
		if err != nil || d1.Version != 1 || string(d1.Data) != `{"name":"Ann"}` {
			t.Fatalf("first save = %+v, %v", d1, err)
		}
		d2, err := s.SaveDocument(c, "users", "u1", json.RawMessage(`{"name":"Bo"}`), domain.SaveOptions{ExpectedVersion: i64(1)})
		if err != nil || d2.Version != 2 || !d2.CreatedAt.Equal(d1.CreatedAt) || d2.UpdatedAt.Before(d1.UpdatedAt) {
			t.Fatalf("second save = %+v, %v", d2, err)
		}
		got, err := s.GetDocument(c, "users", "u1")
		if err != nil || got.Version != 2 || string(got.Data) != `{"name":"Bo"}` || got.Collection != "users" || got.ID != "u1" ||
			!got.CreatedAt.Equal(d1.CreatedAt) || !got.UpdatedAt.Equal(d2.UpdatedAt) {
			t.Fatalf("get = %+v, %v", got, err)
		}
	})

	t.Run("OptimisticConflicts", func(t *testing.T) {
		t.Parallel()
		s := h.New(t)
		c := ctx(t)
		_, err := s.SaveDocument(c, "users", "u1", json.RawMessage(`{}`), domain.SaveOptions{ExpectedVersion: i64(3)})
		wantCode(t, err, domain.CodeConflict)
		if _, err := s.SaveDocument(c, "users", "u1", json.RawMessage(`{"v":1}`), domain.SaveOptions{ExpectedVersion: i64(0)}); err != nil {
			t.Fatalf("create-only save: %v", err)
		}
		_, err = s.SaveDocument(c, "users", "u1", json.RawMessage(`{"v":2}`), domain.SaveOptions{ExpectedVersion: i64(0)})
		wantCode(t, err, domain.CodeConflict)
		_, err = s.SaveDocument(c, "users", "u1", json.RawMessage(`{"v":2}`), domain.SaveOptions{ExpectedVersion: i64(2)})
		wantCode(t, err, domain.CodeConflict)
		err = s.DeleteDocument(c, "users", "u1", domain.SaveOptions{ExpectedVersion: i64(7)})
		wantCode(t, err, domain.CodeConflict)
		got, err := s.GetDocument(c, "users", "u1")
		if err != nil || got.Version != 1 || string(got.Data) != `{"v":1}` {
			t.Fatalf("after conflicts the document is %+v, %v; want version 1 unchanged", got, err)
		}
	})

	t.Run("ConcurrentUpdatesOneWins", func(t *testing.T) {
		t.Parallel()
		s := h.New(t)
		if _, err := s.SaveDocument(ctx(t), "c", "d", json.RawMessage(`0`), domain.SaveOptions{}); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		var mu sync.Mutex
		wins, conflicts := 0, 0
		for i := range 8 {
			wg.Go(func() {
				_, err := s.SaveDocument(ctx(t), "c", "d", json.RawMessage(fmt.Sprint(i)), domain.SaveOptions{ExpectedVersion: i64(1)})
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					wins++
				case domain.ErrorCode(err) == domain.CodeConflict:
					conflicts++
				default:
					t.Errorf("save: %v", err)
				}
			})
		}
		wg.Wait()
		if wins != 1 || conflicts != 7 {
			t.Fatalf("%d saves at version 1 won and %d conflicted; want 1 and 7", wins, conflicts)
		}
	})

	t.Run("DeleteAndNotFound", func(t *testing.T) {
		t.Parallel()
		s := h.New(t)
		c := ctx(t)
		_, err := s.GetDocument(c, "users", "nobody")
		wantCode(t, err, domain.CodeNotFound)
		wantCode(t, s.DeleteDocument(c, "users", "nobody", domain.SaveOptions{}), domain.CodeNotFound)
		if _, err := s.SaveDocument(c, "users", "u1", json.RawMessage(`{}`), domain.SaveOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := s.DeleteDocument(c, "users", "u1", domain.SaveOptions{ExpectedVersion: i64(1)}); err != nil {
			t.Fatalf("delete: %v", err)
		}
		_, err = s.GetDocument(c, "users", "u1")
		wantCode(t, err, domain.CodeNotFound)
		d, err := s.SaveDocument(c, "users", "u1", json.RawMessage(`{}`), domain.SaveOptions{ExpectedVersion: i64(0)})
		if err != nil || d.Version != 1 {
			t.Fatalf("re-create after delete = %+v, %v; want version 1", d, err)
		}
	})

	t.Run("ListPages", func(t *testing.T) {
		t.Parallel()
		s := h.New(t)
		c := ctx(t)
		for i := range 7 {
			if _, err := s.SaveDocument(c, "items", fmt.Sprintf("i%02d", 6-i), json.RawMessage(fmt.Sprint(i)), domain.SaveOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := s.SaveDocument(c, "other", "i00", json.RawMessage(`1`), domain.SaveOptions{}); err != nil {
			t.Fatal(err)
		}
		var ids []string
		cursor := ""
		for pages := 0; ; pages++ {
			if pages > 5 {
				t.Fatalf("paging does not end; ids so far %v", ids)
			}
			page, err := s.ListDocuments(c, "items", domain.ListOptions{After: cursor, Limit: 3})
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range page.Items {
				if d.Collection != "items" {
					t.Fatalf("listed a document of collection %q", d.Collection)
				}
				ids = append(ids, d.ID)
			}
			if page.Next == "" {
				break
			}
			cursor = page.Next
		}
		if strings.Join(ids, ",") != "i00,i01,i02,i03,i04,i05,i06" {
			t.Fatalf("listed %v, want i00..i06 once each in order", ids)
		}
		page, err := s.ListDocuments(c, "empty", domain.ListOptions{})
		if err != nil || len(page.Items) != 0 || page.Next != "" {
			t.Fatalf("empty collection = %+v, %v", page, err)
		}
	})

	t.Run("BadInputWritesNothing", func(t *testing.T) {
		t.Parallel()
		s := h.New(t)
		c := ctx(t)
		for name, call := range map[string]func() error{
			"bad collection": func() error {
				_, err := s.SaveDocument(c, "a*", "x", json.RawMessage(`{}`), domain.SaveOptions{})
				return err
			},
			"bad id": func() error {
				_, err := s.SaveDocument(c, "a", "x y", json.RawMessage(`{}`), domain.SaveOptions{})
				return err
			},
			"broken JSON": func() error {
				_, err := s.SaveDocument(c, "a", "x", json.RawMessage(`{"a"`), domain.SaveOptions{})
				return err
			},
			"empty data": func() error {
				_, err := s.SaveDocument(c, "a", "x", nil, domain.SaveOptions{})
				return err
			},
			"negative version": func() error {
				_, err := s.SaveDocument(c, "a", "x", json.RawMessage(`{}`), domain.SaveOptions{ExpectedVersion: i64(-1)})
				return err
			},
			"bad get": func() error {
				_, err := s.GetDocument(c, "a", "")
				return err
			},
			"bad list": func() error {
				_, err := s.ListDocuments(c, "", domain.ListOptions{})
				return err
			},
			"bad cursor": func() error {
				_, err := s.ListDocuments(c, "a", domain.ListOptions{After: "x y"})
				return err
			},
		} {
			if err := call(); domain.ErrorCode(err) != domain.CodeInvalidInput {
				t.Errorf("%s: got %v, want invalid_input", name, err)
			}
		}
		page, err := s.ListDocuments(c, "a", domain.ListOptions{})
		if err != nil || len(page.Items) != 0 {
			t.Fatalf("bad saves wrote %+v, %v", page, err)
		}
	})
}

func runKV(t *testing.T, h Harness) {
	t.Run("SetGetDelete", func(t *testing.T) {
		t.Parallel()
		s := h.New(t)
		c := ctx(t)
		e, err := s.SetKey(c, "cfg:theme", json.RawMessage(`{"dark": true}`), 0)
		if err != nil || string(e.Value) != `{"dark":true}` || e.ExpiresAt != nil {
			t.Fatalf("set = %+v, %v", e, err)
		}
		got, err := s.GetKey(c, "cfg:theme")
		if err != nil || string(got.Value) != `{"dark":true}` || got.Key != "cfg:theme" || got.ExpiresAt != nil {
			t.Fatalf("get = %+v, %v", got, err)
		}
		if _, err := s.SetKey(c, "cfg:theme", json.RawMessage(`"light"`), 0); err != nil {
			t.Fatal(err)
		}
		if got, _ := s.GetKey(c, "cfg:theme"); string(got.Value) != `"light"` {
			t.Fatalf("overwrite: got %s", got.Value)
		}
		if err := s.DeleteKey(c, "cfg:theme"); err != nil {
			t.Fatal(err)
		}
		_, err = s.GetKey(c, "cfg:theme")
		wantCode(t, err, domain.CodeNotFound)
		wantCode(t, s.DeleteKey(c, "cfg:theme"), domain.CodeNotFound)
	})

	t.Run("TTLExpires", func(t *testing.T) {
		t.Parallel()
		s := h.New(t)
		c := ctx(t)
		set := time.Now()
		e, err := s.SetKey(c, "session", json.RawMessage(`"abc"`), 300*time.Millisecond)
		if err != nil || e.ExpiresAt == nil || e.ExpiresAt.Before(set.Add(250*time.Millisecond)) || e.ExpiresAt.After(set.Add(2*time.Second)) {
			t.Fatalf("set with ttl = %+v, %v", e, err)
		}
		if _, err := s.SetKey(c, "forever", json.RawMessage(`1`), 0); err != nil {
			t.Fatal(err)
		}
		got, err := s.GetKey(c, "session")
		if time.Since(set) < 250*time.Millisecond && (err != nil || string(got.Value) != `"abc"`) {
			t.Fatalf("get before expiry = %+v, %v", got, err)
		}
		waitUntil(t, 5*time.Second, func() bool {
			_, err := s.GetKey(c, "session")
			return domain.ErrorCode(err) == domain.CodeNotFound
		}, "key with a 300ms TTL still readable")
		if time.Since(set) < 300*time.Millisecond {
			t.Fatalf("key expired after %v, before its TTL of 300ms", time.Since(set))
		}
		wantCode(t, s.DeleteKey(c, "session"), domain.CodeNotFound)
		// An expired counter starts again from zero without an expiry.
		e, err = s.IncrKey(c, "session", 5)
		if err != nil || string(e.Value) != "5" || e.ExpiresAt != nil {
			t.Fatalf("incr of an expired key = %+v, %v; want 5 with no expiry", e, err)
		}
		if _, err := s.GetKey(c, "forever"); err != nil {
			t.Fatalf("key without TTL: %v", err)
		}
		if h.Reopen != nil {
			if _, err := s.SetKey(c, "short", json.RawMessage(`1`), 200*time.Millisecond); err != nil {
				t.Fatal(err)
			}
			s2 := h.Reopen(t, s)
			waitUntil(t, 5*time.Second, func() bool {
				_, err := s2.GetKey(c, "short")
				return domain.ErrorCode(err) == domain.CodeNotFound
			}, "TTL not honoured after reopening")
		}
	})

	t.Run("IncrIsAtomicAndKeepsTTL", func(t *testing.T) {
		t.Parallel()
		s := h.New(t)
		c := ctx(t)
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for range 50 {
					if _, err := s.IncrKey(ctx(t), "hits", 1); err != nil {
						t.Errorf("incr: %v", err)
						return
					}
				}
			})
		}
		wg.Wait()
		got, err := s.GetKey(c, "hits")
		if err != nil || string(got.Value) != "400" {
			t.Fatalf("after 400 concurrent increments the value is %s, %v", got.Value, err)
		}
		e, err := s.IncrKey(c, "hits", -500)
		if err != nil || string(e.Value) != "-100" {
			t.Fatalf("incr by -500 = %+v, %v", e, err)
		}
		set, err := s.SetKey(c, "ttl-counter", json.RawMessage(`10`), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		e, err = s.IncrKey(c, "ttl-counter", 1)
		if err != nil || string(e.Value) != "11" || e.ExpiresAt == nil || !e.ExpiresAt.Equal(*set.ExpiresAt) {
			t.Fatalf("incr of a key with a TTL = %+v, %v; want 11 with expiry %v", e, err, set.ExpiresAt)
		}
	})

	t.Run("BadInputWritesNothing", func(t *testing.T) {
		t.Parallel()
		s := h.New(t)
		c := ctx(t)
		if _, err := s.SetKey(c, "name", json.RawMessage(`"x"`), 0); err != nil {
			t.Fatal(err)
		}
		_, err := s.IncrKey(c, "name", 1)
		wantCode(t, err, domain.CodeConflict)
		if _, err := s.SetKey(c, "big", json.RawMessage(`9223372036854775807`), 0); err != nil {
			t.Fatal(err)
		}
		_, err = s.IncrKey(c, "big", 1)
		wantCode(t, err, domain.CodeConflict)
		_, err = s.SetKey(c, "a*", json.RawMessage(`1`), 0)
		wantCode(t, err, domain.CodeInvalidInput)
		_, err = s.SetKey(c, "k", json.RawMessage(`{`), 0)
		wantCode(t, err, domain.CodeInvalidInput)
		_, err = s.SetKey(c, "k", json.RawMessage(`1`), -time.Second)
		wantCode(t, err, domain.CodeInvalidInput)
		_, err = s.GetKey(c, "")
		wantCode(t, err, domain.CodeInvalidInput)
		_, err = s.GetKey(c, "k")
		wantCode(t, err, domain.CodeNotFound)
		if got, _ := s.GetKey(c, "name"); string(got.Value) != `"x"` {
			t.Fatalf("a failed incr changed the value to %s", got.Value)
		}
		if got, _ := s.GetKey(c, "big"); string(got.Value) != `9223372036854775807` {
			t.Fatalf("an overflowing incr changed the value to %s", got.Value)
		}
	})
}

// waitUntil polls cond until it holds or the deadline passes. Expiry is a
// matter of the clock, so polling a condition with a deadline is the signal.
func waitUntil(t *testing.T, within time.Duration, cond func() bool, msg string) {
	t.Helper()
	deadline := time.Now().Add(within)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s after %v", msg, within)
		}
		<-tick.C
	}
}
