package relay_test

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/goleak"

	"github.com/nvent/nvent/internal/bus"
	"github.com/nvent/nvent/internal/domain"
	"github.com/nvent/nvent/internal/relay"
	"github.com/nvent/nvent/internal/storage/postgres"
	"github.com/nvent/nvent/internal/testenv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// env is one test's schema: a migrated store and a pool on it.
type env struct {
	url, schema string
	pool        *pgxpool.Pool
	store       *postgres.Store
}

func newEnv(t *testing.T) *env {
	t.Helper()
	url, schema := testenv.PostgresSchema(t)
	cfg := postgres.Config{URL: url, Schema: schema, MaxConns: 8, AutoMigrate: true}
	store, cleanup, err := postgres.Open(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cleanup)
	pool, closePool, err := postgres.NewPool(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(closePool)
	return &env{url: url, schema: schema, pool: pool, store: store}
}

func (e *env) append(t *testing.T, subject string, types ...string) []domain.Event {
	t.Helper()
	var in []domain.NewEvent
	for _, typ := range types {
		in = append(in, domain.NewEvent{Type: typ})
	}
	res, err := e.store.Append(context.Background(), subject, in, domain.AppendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return res.Events
}

// instance is one relay with a bus whose only handler records what it is
// given, acknowledging it unless hold is set.
type instance struct {
	got     chan bus.Change
	leading atomic.Bool
	led     chan struct{} // receives when the relay takes the lease
	hold    chan struct{} // when not nil, the handler waits for it to close
	cancel  context.CancelFunc
	done    chan struct{}
	stopAll func()
	once    sync.Once
}

func startRelay(t *testing.T, e *env, cfg relay.Config, hold chan struct{}) *instance {
	t.Helper()
	cfg.Schema = e.schema
	return startWith(t, func(b message.Publisher, m relay.Metrics, ready, busGone <-chan struct{}) runner {
		return relay.New(e.pool, b, cfg, slog.New(slog.DiscardHandler), m, ready, busGone)
	}, hold)
}

// runner is a relay of either kind.
type runner interface{ Run(context.Context) error }

// startWith runs the relay that build makes with a recording handler.
func startWith(t *testing.T, build func(b message.Publisher, m relay.Metrics, ready, busGone <-chan struct{}) runner, hold chan struct{}) *instance {
	t.Helper()
	b := gochannel.NewGoChannel(gochannel.Config{BlockPublishUntilSubscriberAck: true}, watermill.NopLogger{})
	ctx, cancel := context.WithCancel(context.Background())
	subCtx, cancelSub := context.WithCancel(context.Background())
	msgs, err := b.Subscribe(subCtx, bus.Topic)
	if err != nil {
		t.Fatal(err)
	}
	in := &instance{got: make(chan bus.Change, 10_000), led: make(chan struct{}, 1), hold: hold, cancel: cancel, done: make(chan struct{})}
	handlerDone := make(chan struct{})
	go func() {
		defer close(handlerDone)
		for msg := range msgs {
			if in.hold != nil {
				select {
				case <-in.hold:
				case <-ctx.Done():
					msg.Nack()
					continue
				}
			}
			c, err := bus.Decode(msg)
			if err != nil {
				t.Errorf("relay published an undecodable message: %v", err)
			}
			in.got <- c
			msg.Ack()
		}
	}()
	ready, busGone := make(chan struct{}), make(chan struct{})
	close(ready)
	r := build(b, relay.Metrics{Leading: func(on bool) {
		in.leading.Store(on)
		if on {
			select {
			case in.led <- struct{}{}:
			default:
			}
		}
	}}, ready, busGone)
	relayDone := make(chan struct{})
	go func() {
		defer close(relayDone)
		if err := r.Run(ctx); err != nil {
			t.Errorf("relay: %v", err)
		}
	}()
	// Stopping is what the app does: stop the relay, then the consumer (here
	// the handler goroutine, when the bus closes).
	in.stopAll = func() {
		cancel()
		select {
		case <-relayDone:
		case <-time.After(time.Second): // blocked publishing to a handler that holds
		}
		close(busGone)
		cancelSub()
		_ = b.Close()
		<-relayDone
		<-handlerDone
		close(in.done)
	}
	t.Cleanup(in.stop)
	return in
}

// waitLeading waits until the relay holds the lease.
func (in *instance) waitLeading(t *testing.T) {
	t.Helper()
	select {
	case <-in.led:
	case <-time.After(10 * time.Second):
		t.Fatal("the relay never took the lease")
	}
}

func (in *instance) stop() { in.once.Do(in.stopAll) }

// expect reads n changes within the deadline.
func (in *instance) expect(t *testing.T, n int, within time.Duration) []bus.Change {
	t.Helper()
	var out []bus.Change
	deadline := time.After(within)
	for len(out) < n {
		select {
		case c := <-in.got:
			out = append(out, c)
		case <-deadline:
			t.Fatalf("relayed %d of %d changes within %v", len(out), n, within)
		}
	}
	return out
}

// expectNothing fails if a change arrives within d: the relay has had d to
// misbehave (several poll rounds).
func (in *instance) expectNothing(t *testing.T, d time.Duration, why string) {
	t.Helper()
	select {
	case c := <-in.got:
		t.Fatalf("%s, but the relay published %s %s", why, c.Kind, c.ID)
	case <-time.After(d):
	}
}

func fast() relay.Config {
	return relay.Config{PollInterval: 50 * time.Millisecond, LeaseRetry: 50 * time.Millisecond, ErrorBackoff: 50 * time.Millisecond}
}

func TestRelaysCommittedEventsInOrder(t *testing.T) {
	e := newEnv(t)
	in := startRelay(t, e, fast(), nil)
	want := e.append(t, "orders:1", "a", "b", "c")
	got := in.expect(t, 3, 10*time.Second)
	for i, c := range got {
		if c.Kind != bus.KindAppend || c.ID != want[i].ID || c.Event.Seq != want[i].Seq || c.Event.Subject != "orders:1" || !c.Event.TS.Equal(want[i].TS) {
			t.Fatalf("change %d = %+v, want event %+v", i, c, want[i])
		}
	}
}

// TestALateCommitIsNotSkipped is the trap of a BIGSERIAL reader: a
// transaction that took its position first but commits last must still be
// relayed, and before the events of transactions that began after it.
func TestALateCommitIsNotSkipped(t *testing.T) {
	e := newEnv(t)
	in := startRelay(t, e, fast(), nil)
	ctx := context.Background()
	// The slow writer inserts first (taking a smaller position) and holds.
	conn, err := pgx.Connect(ctx, e.url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, err = tx.Exec(ctx, fmt.Sprintf(`INSERT INTO %s.events (subject, seq, id, type, data, ts) VALUES ('slow', 1, 'slow-1', 'x', 'null', now())`,
		pgx.Identifier{e.schema}.Sanitize()))
	if err != nil {
		t.Fatal(err)
	}
	fastEvents := e.append(t, "fast", "y") // commits while the slow one is open
	in.expectNothing(t, 500*time.Millisecond, "an older transaction is still open")
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	got := in.expect(t, 2, 10*time.Second)
	if got[0].ID != "slow-1" || got[1].ID != fastEvents[0].ID {
		t.Fatalf("relayed %s then %s; want the slow writer's event first (commit order by transaction), then the fast one", got[0].ID, got[1].ID)
	}
}

func TestALongTransactionElsewhereDelaysButLosesNothing(t *testing.T) {
	e := newEnv(t)
	in := startRelay(t, e, fast(), nil)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, e.url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Any transaction with an id, in any table, holds back the snapshot's xmin.
	if _, err := tx.Exec(ctx, "SELECT pg_current_xact_id()"); err != nil {
		t.Fatal(err)
	}
	e.append(t, "orders:1", "a", "b")
	in.expectNothing(t, 500*time.Millisecond, "a long transaction is open")
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	in.expect(t, 2, 10*time.Second)
}

func TestConcurrentAppendersAreAllRelayedOnce(t *testing.T) {
	e := newEnv(t)
	in := startRelay(t, e, fast(), nil)
	const writers, each = 8, 50
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for range each {
				e.append(t, fmt.Sprintf("s%d", w%3), "t")
			}
		})
	}
	wg.Wait()
	got := in.expect(t, writers*each, 30*time.Second)
	seen := map[string]bool{}
	last := map[string]int64{}
	for _, c := range got {
		if seen[c.ID] {
			t.Fatalf("event %s relayed twice", c.ID)
		}
		seen[c.ID] = true
		if c.Event.Seq != last[c.Event.Subject]+1 {
			t.Fatalf("%s seq %d relayed after %d", c.Event.Subject, c.Event.Seq, last[c.Event.Subject])
		}
		last[c.Event.Subject] = c.Event.Seq
	}
	in.expectNothing(t, 300*time.Millisecond, "everything was relayed")
}

func TestTheCheckpointOnlyMovesAfterTheAck(t *testing.T) {
	e := newEnv(t)
	hold := make(chan struct{})
	first := startRelay(t, e, fast(), hold) // its handler never acknowledges
	want := e.append(t, "orders:1", "a")
	first.expectNothing(t, 300*time.Millisecond, "the handler holds the message")
	first.stop() // dies before the ack
	second := startRelay(t, e, fast(), nil)
	if got := second.expect(t, 1, 10*time.Second); got[0].ID != want[0].ID {
		t.Fatalf("the next relay published %s, want the unacknowledged %s", got[0].ID, want[0].ID)
	}
	// And once acknowledged, never again.
	second.stop()
	third := startRelay(t, e, fast(), nil)
	e.append(t, "orders:1", "b")
	if got := third.expect(t, 1, 10*time.Second); got[0].Event.Seq != 2 {
		t.Fatalf("after a restart the relay published seq %d, want only the new seq 2", got[0].Event.Seq)
	}
}

func TestOneLeaderAndATakeover(t *testing.T) {
	e := newEnv(t)
	a := startRelay(t, e, fast(), nil)
	a.waitLeading(t)
	b := startRelay(t, e, fast(), nil)
	e.append(t, "orders:1", "a", "b", "c")
	a.expect(t, 3, 10*time.Second)
	b.expectNothing(t, 300*time.Millisecond, "only the leader relays")
	if b.leading.Load() {
		t.Fatal("two relays lead at once")
	}
	a.stop()
	b.waitLeading(t)
	e.append(t, "orders:1", "d")
	got := b.expect(t, 1, 10*time.Second)
	if got[0].Event.Seq != 4 {
		t.Fatalf("the new leader published seq %d, want 4 (and nothing already relayed)", got[0].Event.Seq)
	}
}

func TestNotifyWakesTheRelayWithoutPolling(t *testing.T) {
	e := newEnv(t)
	cfg := fast()
	cfg.PollInterval = time.Minute
	in := startRelay(t, e, cfg, nil)
	in.waitLeading(t)
	// Let the first round (right after taking the lease) pass: it finds nothing.
	in.expectNothing(t, 200*time.Millisecond, "nothing was appended")
	e.append(t, "orders:1", "a")
	in.expect(t, 1, 5*time.Second) // well under the one-minute poll

	// A writer of its own (not nvent's store) wakes it with a NOTIFY naming
	// the schema after its commit, as README documents.
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, e.url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, fmt.Sprintf(`INSERT INTO %s.events (subject, seq, id, type, data, ts) VALUES ('other', 1, 'qualified-1', 'x', 'null', now())`,
		pgx.Identifier{e.schema}.Sanitize())); err != nil {
		t.Fatal(err)
	}
	in.expectNothing(t, 200*time.Millisecond, "an outside insert without NOTIFY waits for the poll")
	if _, err := conn.Exec(ctx, `SELECT pg_notify('nvent_relay', $1)`, e.schema); err != nil {
		t.Fatal(err)
	}
	if got := in.expect(t, 1, 5*time.Second); got[0].ID != "qualified-1" {
		t.Fatalf("relayed %s", got[0].ID)
	}
}

func TestDocumentAndKeyChangesAreRelayedThenPruned(t *testing.T) {
	e := newEnv(t)
	in := startRelay(t, e, fast(), nil)
	ctx := context.Background()
	doc, err := e.store.SaveDocument(ctx, "users", "u1", []byte(`{"name":"Ann"}`), domain.SaveOptions{})
	if err != nil {
		t.Fatal(err)
	}
	entry, err := e.store.SetKey(ctx, "k", []byte(`42`), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.store.DeleteDocument(ctx, "users", "u1", domain.SaveOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := e.store.DeleteKey(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	got := in.expect(t, 4, 10*time.Second)
	if c := got[0]; c.Kind != bus.KindSave || c.Collection != "users" || c.DocumentID != "u1" || c.Document == nil ||
		c.Document.Version != doc.Version || string(c.Document.Data) != `{"name":"Ann"}` || !c.Document.UpdatedAt.Equal(doc.UpdatedAt) {
		t.Fatalf("save relayed as %+v", c)
	}
	if c := got[1]; c.Kind != bus.KindKeySet || c.Key != "k" || c.Entry == nil || string(c.Entry.Value) != "42" || !c.Entry.ExpiresAt.Equal(*entry.ExpiresAt) {
		t.Fatalf("set relayed as %+v", c)
	}
	if got[2].Kind != bus.KindDelete || got[2].DocumentID != "u1" || got[3].Kind != bus.KindKeyDelete || got[3].Key != "k" {
		t.Fatalf("deletes relayed as %+v, %+v", got[2], got[3])
	}
	// Relayed change rows are only an outbox: they go once checkpointed.
	deadline := time.After(10 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		var n int
		if err := e.pool.QueryRow(ctx, "SELECT count(*) FROM changes").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		select {
		case <-deadline:
			t.Fatalf("%d relayed change rows were never pruned", n)
		case <-tick.C:
		}
	}
}

// TestTransactionIDsAreOrderedAsNumbers: transaction ids that cross a
// power of ten (as a cluster's do at 10^7, 10^8, …) must be read in numeric
// order. Read as text, 1000000 sorts before 999999 and a batch cut by its
// limit would move the checkpoint past rows never read.
func TestTransactionIDsAreOrderedAsNumbers(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	var current uint64
	if err := e.pool.QueryRow(ctx, `SELECT pg_current_xact_id()::text::bigint`).Scan(&current); err != nil {
		t.Fatal(err)
	}
	const n = 20
	p := uint64(1)
	for p*10 <= current-n {
		p *= 10
	}
	if p < 100 {
		t.Fatalf("the cluster's transaction ids (%d) are too young for this test", current)
	}
	for i := range uint64(n) { // finished transactions' ids, set by hand
		if _, err := e.pool.Exec(ctx, `INSERT INTO events (tx_id, subject, seq, id, type, data, ts)
			VALUES ($1::text::xid8, 'boundary', $2, $3, 'x', 'null', now())`,
			fmt.Sprint(p-n/2+i), i+1, fmt.Sprintf("boundary-%d", i+1)); err != nil {
			t.Fatal(err)
		}
	}
	cfg := fast()
	cfg.BatchSize = 5 // so that the limit cuts across the boundary
	in := startRelay(t, e, cfg, nil)
	got := in.expect(t, n, 10*time.Second)
	for i, c := range got {
		if c.Event.Seq != int64(i+1) {
			t.Fatalf("event %d relayed has seq %d: ids across %d were not read in numeric order", i, c.Event.Seq, p)
		}
	}
	in.expectNothing(t, 300*time.Millisecond, "every event was relayed once")
}

// flushingBus is a bus whose handlers queue their output until Flush (as
// bus.Bus with the stream coordinator's stream.Batch), with a Flush that
// fails while failing is set.
type flushingBus struct {
	message.Publisher
	failing atomic.Bool
	flushes chan struct{}
}

func (f *flushingBus) Flush(context.Context) error {
	select {
	case f.flushes <- struct{}{}:
	default:
	}
	if f.failing.Load() {
		return fmt.Errorf("the stream is down")
	}
	return nil
}

// TestTheCheckpointWaitsForTheFlush: a batch whose flush to the stream
// fails is not checkpointed, and is published again until a flush
// succeeds; only then does the checkpoint move.
func TestTheCheckpointWaitsForTheFlush(t *testing.T) {
	e := newEnv(t)
	cfg := fast()
	cfg.Schema = e.schema
	fb := &flushingBus{flushes: make(chan struct{}, 1)}
	fb.failing.Store(true)
	in := startWith(t, func(b message.Publisher, m relay.Metrics, ready, busGone <-chan struct{}) runner {
		fb.Publisher = b
		return relay.New(e.pool, fb, cfg, slog.New(slog.DiscardHandler), m, ready, busGone)
	}, nil)
	want := e.append(t, "orders:1", "a")
	// Published, flush failed; published again, flush failed again.
	for range 2 {
		if got := in.expect(t, 1, 10*time.Second); got[0].ID != want[0].ID {
			t.Fatalf("relayed %s, want %s", got[0].ID, want[0].ID)
		}
	}
	checkpoints := func() int {
		var n int
		if err := e.pool.QueryRow(context.Background(), `SELECT count(*) FROM relay_checkpoints WHERE name = 'events'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := checkpoints(); n != 0 {
		t.Fatalf("%d checkpoints stored while every flush failed", n)
	}
	fb.failing.Store(false)
	deadline := time.Now().Add(10 * time.Second)
	for checkpoints() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no checkpoint within 10s of a flush succeeding")
		}
		select {
		case <-fb.flushes:
		case <-time.After(50 * time.Millisecond):
		}
	}
}
