package relay_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	goredis "github.com/redis/go-redis/v9"

	"github.com/nvent/nvent/internal/bus"
	"github.com/nvent/nvent/internal/domain"
	"github.com/nvent/nvent/internal/relay"
	redisstore "github.com/nvent/nvent/internal/storage/redis"
	"github.com/nvent/nvent/internal/testenv"
)

// redisEnv is one test's Redis store: a key prefix of its own, deleted when
// the test ends.
type redisEnv struct {
	url, prefix string
	store       *redisstore.Store
	raw         *goredis.Client
}

func newRedisEnv(t *testing.T) *redisEnv {
	t.Helper()
	url := testenv.RedisURL(t)
	prefix := testenv.RedisPrefix(t, url)
	e := &redisEnv{url: url, prefix: prefix, store: openRedisStore(t, url, prefix)}
	opts, _ := goredis.ParseURL(url)
	e.raw = goredis.NewClient(opts)
	t.Cleanup(func() { _ = e.raw.Close() })
	return e
}

// openRedisStore opens a store on url under prefix (another client, as
// another process would have), closed when t ends.
func openRedisStore(t *testing.T, url, prefix string) *redisstore.Store {
	t.Helper()
	s, cleanup, err := redisstore.Provide(redisstore.Config{URL: url, Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cleanup)
	return s
}

func (e *redisEnv) append(t *testing.T, subject string, types ...string) []domain.Event {
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

func (e *redisEnv) checkpoint(t *testing.T) string {
	t.Helper()
	cp, err := e.store.Checkpoint(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return cp
}

// outboxLen is how many entries the outbox holds (not yet relayed).
func (e *redisEnv) outboxLen(t *testing.T) int64 {
	t.Helper()
	n, err := e.raw.XLen(context.Background(), e.prefix+"outbox").Result()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// waitFor polls cond (a Redis key's state: there is no signal for it)
// until it holds, failing after within.
func waitFor(t *testing.T, within time.Duration, cond func() bool, msg func() string) {
	t.Helper()
	deadline := time.Now().Add(within)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", within, msg())
		}
		<-tick.C
	}
}

func fastRedis() relay.RedisConfig {
	return relay.RedisConfig{Config: fast(), LeaseTTL: 600 * time.Millisecond}
}

func startRedisRelay(t *testing.T, s relay.RedisOutbox, cfg relay.RedisConfig, hold chan struct{}) *instance {
	t.Helper()
	return startWith(t, func(b message.Publisher, m relay.Metrics, ready, busGone <-chan struct{}) runner {
		return relay.NewRedis(s, b, cfg, slog.New(slog.DiscardHandler), m, ready, busGone)
	}, hold)
}

func TestRedisRelaysEveryChangeInOrder(t *testing.T) {
	e := newRedisEnv(t)
	in := startRedisRelay(t, e.store, fastRedis(), nil)
	ctx := context.Background()
	want := e.append(t, "orders:1", "a", "b")
	doc, err := e.store.SaveDocument(ctx, "users", "u1", json.RawMessage(`{"name":"Ann"}`), domain.SaveOptions{})
	if err != nil {
		t.Fatal(err)
	}
	entry, err := e.store.SetKey(ctx, "k", json.RawMessage(`41`), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.IncrKey(ctx, "k", 1); err != nil {
		t.Fatal(err)
	}
	want = append(want, e.append(t, "orders:1", "c")...)
	if err := e.store.DeleteDocument(ctx, "users", "u1", domain.SaveOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := e.store.DeleteKey(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	got := in.expect(t, 8, 10*time.Second)
	for i, j := range []int{0, 1, 5} {
		c := got[j]
		if c.Kind != bus.KindAppend || c.ID != want[i].ID || c.Event.Seq != want[i].Seq || c.Event.Subject != "orders:1" ||
			!c.Event.TS.Equal(want[i].TS) || !c.At.Equal(want[i].TS) {
			t.Fatalf("change %d = %+v, want event %+v", j, c, want[i])
		}
	}
	if c := got[2]; c.Kind != bus.KindSave || c.Collection != "users" || c.DocumentID != "u1" || c.Document == nil ||
		c.Document.Version != 1 || string(c.Document.Data) != `{"name":"Ann"}` || !c.Document.UpdatedAt.Equal(doc.UpdatedAt) || c.ID == "" {
		t.Fatalf("save relayed as %+v", c)
	}
	if c := got[3]; c.Kind != bus.KindKeySet || c.Key != "k" || c.Entry == nil || string(c.Entry.Value) != "41" || !c.Entry.ExpiresAt.Equal(*entry.ExpiresAt) {
		t.Fatalf("set relayed as %+v", c)
	}
	if c := got[4]; c.Kind != bus.KindKeySet || string(c.Entry.Value) != "42" || !c.Entry.ExpiresAt.Equal(*entry.ExpiresAt) {
		t.Fatalf("incr relayed as %+v", c)
	}
	if got[6].Kind != bus.KindDelete || got[6].DocumentID != "u1" || got[7].Kind != bus.KindKeyDelete || got[7].Key != "k" {
		t.Fatalf("deletes relayed as %+v, %+v", got[6], got[7])
	}
	// Relayed entries are trimmed once checkpointed.
	waitFor(t, 10*time.Second, func() bool { return e.outboxLen(t) == 0 },
		func() string { return fmt.Sprintf("%d relayed entries were never trimmed", e.outboxLen(t)) })
	in.expectNothing(t, 300*time.Millisecond, "everything was relayed once")
}

func TestRedisRelayedChangesCarryTheirCorrelationID(t *testing.T) {
	e := newRedisEnv(t)
	in := startRedisRelay(t, e.store, fastRedis(), nil)
	want := writeCorrelated(t, e.store)
	checkCorrelated(t, in.expect(t, len(want), 10*time.Second), want)
	in.expectNothing(t, 300*time.Millisecond, "every change was relayed once")
}

func TestRedisCheckpointOnlyMovesAfterTheAck(t *testing.T) {
	e := newRedisEnv(t)
	hold := make(chan struct{})
	first := startRedisRelay(t, e.store, fastRedis(), hold) // its handler never acknowledges
	want := e.append(t, "orders:1", "a")
	first.expectNothing(t, 300*time.Millisecond, "the handler holds the message")
	if cp := e.checkpoint(t); cp != "" {
		t.Fatalf("the checkpoint moved to %s before the acknowledgement", cp)
	}
	first.stop() // dies before the ack

	second := startRedisRelay(t, openRedisStore(t, e.url, e.prefix), fastRedis(), nil)
	if got := second.expect(t, 1, 10*time.Second); got[0].ID != want[0].ID {
		t.Fatalf("the next relay published %s, want the unacknowledged %s", got[0].ID, want[0].ID)
	}
	waitFor(t, 10*time.Second, func() bool { return e.checkpoint(t) != "" && e.outboxLen(t) == 0 },
		func() string { return "the acknowledged entry was never checkpointed" })
	// And once acknowledged, never again.
	second.stop()
	third := startRedisRelay(t, e.store, fastRedis(), nil)
	e.append(t, "orders:1", "b")
	if got := third.expect(t, 1, 10*time.Second); got[0].Event.Seq != 2 {
		t.Fatalf("after a restart the relay published seq %d, want only the new seq 2", got[0].Event.Seq)
	}
}

func TestRedisOneLeaderAndATakeover(t *testing.T) {
	e := newRedisEnv(t)
	a := startRedisRelay(t, e.store, fastRedis(), nil)
	a.waitLeading(t)
	b := startRedisRelay(t, openRedisStore(t, e.url, e.prefix), fastRedis(), nil)
	e.append(t, "orders:1", "a", "b", "c")
	a.expect(t, 3, 10*time.Second)
	b.expectNothing(t, 300*time.Millisecond, "only the leader relays")
	if b.leading.Load() {
		t.Fatal("two relays lead at once")
	}
	a.stop() // releases the lease
	b.waitLeading(t)
	e.append(t, "orders:1", "d")
	if got := b.expect(t, 1, 10*time.Second); got[0].Event.Seq != 4 {
		t.Fatalf("the new leader published seq %d, want 4 (and nothing already relayed)", got[0].Event.Seq)
	}
}

// TestRedisADeadLeadersLeaseExpires: a leader that dies keeps its lease
// until it expires; then another relay takes over and relays what was
// written meanwhile.
func TestRedisADeadLeadersLeaseExpires(t *testing.T) {
	e := newRedisEnv(t)
	ctx := context.Background()
	if ok, err := e.store.AcquireLease(ctx, "crashed", time.Second); err != nil || !ok {
		t.Fatalf("taking the lease for a leader that then dies: %v, %v", ok, err)
	}
	taken := time.Now()
	in := startRedisRelay(t, e.store, fastRedis(), nil)
	want := e.append(t, "orders:1", "a")
	in.waitLeading(t)
	if since := time.Since(taken); since < 900*time.Millisecond {
		t.Fatalf("the relay led %v after a dead leader took a one-second lease", since)
	}
	if got := in.expect(t, 1, 10*time.Second); got[0].ID != want[0].ID {
		t.Fatalf("relayed %s, want %s", got[0].ID, want[0].ID)
	}
}

// TestRedisALeaderThatLostItsLeaseStepsDown: when the lease is someone
// else's (it expired during a pause and was taken), the leader notices at
// its next renewal, stops relaying, and could not have moved the
// checkpoint anyway.
func TestRedisALeaderThatLostItsLeaseStepsDown(t *testing.T) {
	e := newRedisEnv(t)
	ctx := context.Background()
	in := startRedisRelay(t, e.store, fastRedis(), nil)
	in.waitLeading(t)
	if err := e.raw.Set(ctx, e.prefix+"relay:lease", "usurper", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, func() bool { return !in.leading.Load() },
		func() string { return "the relay still leads on a lease that is someone else's" })
	e.append(t, "orders:1", "a")
	in.expectNothing(t, 500*time.Millisecond, "the relay lost its lease")
	if cp := e.checkpoint(t); cp != "" {
		t.Fatalf("a relay without the lease moved the checkpoint to %s", cp)
	}
	if err := e.raw.Del(ctx, e.prefix+"relay:lease").Err(); err != nil { // the usurper goes away
		t.Fatal(err)
	}
	in.waitLeading(t)
	in.expect(t, 1, 10*time.Second)
}

func TestRedisConcurrentWritersAreAllRelayedOnceInSeqOrder(t *testing.T) {
	e := newRedisEnv(t)
	in := startRedisRelay(t, e.store, fastRedis(), nil)
	other := openRedisStore(t, e.url, e.prefix) // a second instance writing
	const writers, each = 8, 50
	var wg sync.WaitGroup
	for w := range writers {
		s := []*redisstore.Store{e.store, other}[w%2]
		wg.Go(func() {
			for range each {
				if _, err := s.Append(context.Background(), fmt.Sprintf("s%d", w%3), []domain.NewEvent{{Type: "t"}}, domain.AppendOptions{}); err != nil {
					t.Error(err)
					return
				}
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

// TestRedisAHandlerThatFailsThenRecoversLosesNothing: a handler that nacks
// a message gets it again (the bus redelivers until it is acknowledged),
// the relay waits, nothing after it overtakes it, and the checkpoint
// catches up once it is handled.
func TestRedisAHandlerThatFailsThenRecoversLosesNothing(t *testing.T) {
	e := newRedisEnv(t)
	b := gochannel.NewGoChannel(gochannel.Config{BlockPublishUntilSubscriberAck: true}, watermill.NopLogger{})
	subCtx, cancelSub := context.WithCancel(context.Background())
	msgs, err := b.Subscribe(subCtx, bus.Topic)
	if err != nil {
		t.Fatal(err)
	}
	const failures = 3
	got := make(chan bus.Change, 100)
	handlerDone := make(chan struct{})
	nacked := 0
	go func() {
		defer close(handlerDone)
		for msg := range msgs {
			c, err := bus.Decode(msg)
			if err != nil {
				t.Errorf("undecodable change: %v", err)
				msg.Ack()
				continue
			}
			if c.Event != nil && c.Event.Seq == 2 && nacked < failures { // the handler fails on seq 2, then recovers
				nacked++
				msg.Nack()
				continue
			}
			got <- c
			msg.Ack()
		}
	}()
	ready, busGone := make(chan struct{}), make(chan struct{})
	close(ready)
	r := relay.NewRedis(e.store, b, fastRedis(), slog.New(slog.DiscardHandler), relay.Metrics{}, ready, busGone)
	ctx, cancel := context.WithCancel(context.Background())
	relayDone := make(chan struct{})
	go func() {
		defer close(relayDone)
		if err := r.Run(ctx); err != nil {
			t.Errorf("relay: %v", err)
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-relayDone
		close(busGone)
		cancelSub()
		_ = b.Close()
		<-handlerDone
	})

	want := e.append(t, "orders:1", "a", "b", "c")
	for i := range want {
		select {
		case c := <-got:
			if c.ID != want[i].ID {
				t.Fatalf("change %d is %s (seq %d), want %s: nothing may overtake a failing one", i, c.ID, c.Event.Seq, want[i].ID)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%d of %d changes handled", i, len(want))
		}
	}
	if nacked != failures {
		t.Fatalf("the handler failed %d times, want %d", nacked, failures)
	}
	waitFor(t, 10*time.Second, func() bool { return e.outboxLen(t) == 0 && e.checkpoint(t) != "" },
		func() string { return "the checkpoint never caught up after the handler recovered" })
}

// TestRedisAForeignEntryIsSetAside: an outbox entry written behind the
// store's back is published as a message that is not a change (the router
// sets it aside on the poison topic), and what follows still flows.
func TestRedisAForeignEntryIsSetAside(t *testing.T) {
	e := newRedisEnv(t)
	b := gochannel.NewGoChannel(gochannel.Config{BlockPublishUntilSubscriberAck: true}, watermill.NopLogger{})
	subCtx, cancelSub := context.WithCancel(context.Background())
	msgs, err := b.Subscribe(subCtx, bus.Topic)
	if err != nil {
		t.Fatal(err)
	}
	ready, busGone := make(chan struct{}), make(chan struct{})
	close(ready)
	r := relay.NewRedis(e.store, b, fastRedis(), slog.New(slog.DiscardHandler), relay.Metrics{}, ready, busGone)
	ctx, cancel := context.WithCancel(context.Background())
	relayDone := make(chan struct{})
	go func() {
		defer close(relayDone)
		_ = r.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-relayDone
		close(busGone)
		cancelSub()
		_ = b.Close()
	})
	if err := e.raw.XAdd(context.Background(), &goredis.XAddArgs{Stream: e.prefix + "outbox", Values: map[string]any{"kind": "bogus"}}).Err(); err != nil {
		t.Fatal(err)
	}
	want := e.append(t, "orders:1", "a")
	next := func() *message.Message {
		t.Helper()
		select {
		case msg := <-msgs:
			msg.Ack()
			return msg
		case <-time.After(10 * time.Second):
			t.Fatal("nothing relayed")
			return nil
		}
	}
	if msg := next(); domain.ErrorCode(decodeErr(msg)) != domain.CodeInvalidInput {
		t.Fatalf("the foreign entry was relayed as %s; want a message bus.Decode refuses", msg.Payload)
	}
	if c, err := bus.Decode(next()); err != nil || c.ID != want[0].ID {
		t.Fatalf("after the foreign entry: %+v, %v", c, err)
	}
}

func decodeErr(msg *message.Message) error {
	_, err := bus.Decode(msg)
	return err
}
