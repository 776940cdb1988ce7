package handlers_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"

	"github.com/nvent/nvent/internal/bus"
	"github.com/nvent/nvent/internal/domain"
	"github.com/nvent/nvent/internal/feed"
	"github.com/nvent/nvent/internal/handlers"
	"github.com/nvent/nvent/internal/router"
	"github.com/nvent/nvent/internal/storage"
	"github.com/nvent/nvent/internal/storage/memory"
	"github.com/nvent/nvent/internal/stream"
)

// node is one in-process instance of a test cluster whose instances share a
// memory stream backend and a store.
type node struct {
	// store is the shared store; writes through it reach the bus of the
	// first node, whose coordinator puts them on the stream.
	store storage.Store
	// inner is the store behind the feed: what is written to it directly
	// never reaches the stream.
	inner  storage.Store
	stream *stream.Stream
	pub    *stream.Publisher
}

// newMemoryBackend returns a memory stream backend, closed when the test
// ends (after the nodes on it, which are started later).
func newMemoryBackend(t *testing.T) *stream.Memory {
	t.Helper()
	mem := stream.NewMemory(watermill.NopLogger{})
	t.Cleanup(func() { _ = mem.Close() })
	return mem
}

// startNode starts an instance with id on mem running the wirings that
// wirings returns. With first nil it is the first instance: it gets a memory
// store behind the feed, the bus and a stream coordinator with every channel
// on. Otherwise it shares first's store and has only its own wirings. The
// router retries a failing message 3 times, 1ms apart at first.
func startNode(t *testing.T, mem *stream.Memory, id string, first *node, wirings func(n *node) []router.Wiring) *node {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	wlog := watermill.NopLogger{}
	n := &node{stream: stream.NewWithBackend(mem, stream.Layout{}, id, wlog)}
	pub, err := n.stream.NewPublisher()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pub.Close() })
	n.pub = pub

	ctx, cancel := context.WithCancel(context.Background())
	life := router.NewLifecycle()
	var all []router.Wiring
	var fs *feed.Store
	if first == nil {
		b, closeBus, err := bus.New(wlog)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(closeBus)
		inner := memory.New()
		t.Cleanup(func() { _ = inner.Close() })
		fs = feed.New(inner, b, log, life.Started())
		n.store, n.inner = fs, inner
		all = append(all, handlers.NewStreamCoordinator(handlers.Channels{StoreSync: true, FlowEvents: true, ClientMessages: true}, b, pub))
	} else {
		n.store, n.inner = first.store, first.inner
	}
	all = append(all, wirings(n)...)
	r, err := router.New(router.Config{RetryInterval: time.Millisecond}, pub, all, log, life)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("router of %s: %v", id, err)
		}
	})
	select {
	case <-r.Running():
	case <-time.After(10 * time.Second):
		t.Fatalf("router of %s did not start", id)
	}
	if fs != nil {
		go func() { _ = fs.Run(ctx) }()
	}
	return n
}

// subscriber returns a subscriber of n with delivery d, closed when the
// test ends.
func (n *node) subscriber(t *testing.T, d stream.Delivery) *stream.Subscriber {
	t.Helper()
	sub, err := n.stream.NewSubscriber(d)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Close() })
	return sub
}

// tail returns every stream message on topics matching pattern from now
// on, in arrival order.
func (n *node) tail(t *testing.T, pattern string) <-chan stream.Message {
	t.Helper()
	sub := n.subscriber(t, stream.Broadcast())
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	msgs, err := sub.Subscribe(ctx, pattern)
	if err != nil {
		t.Fatal(err)
	}
	out := make(chan stream.Message, 10_000)
	go func() {
		for msg := range msgs {
			m, err := stream.FromWatermill(msg)
			msg.Ack()
			if err == nil {
				out <- m
			}
		}
	}()
	return out
}

// next returns the next message of msgs, failing the test after within.
func next(t *testing.T, msgs <-chan stream.Message, within time.Duration) stream.Message {
	t.Helper()
	select {
	case m := <-msgs:
		return m
	case <-time.After(within):
		t.Fatalf("no stream message within %v", within)
		return stream.Message{}
	}
}

// tally makes counters (handlers.Counter) that a test can wait on.
type tally struct {
	// changed holds a token after any of the tally's counters moved.
	changed chan struct{}
}

func newTally() *tally { return &tally{changed: make(chan struct{}, 1)} }

type counter struct {
	n       atomic.Int64
	changed chan struct{}
}

func (tl *tally) counter() *counter { return &counter{changed: tl.changed} }

func (c *counter) Inc() {
	c.n.Add(1)
	select {
	case c.changed <- struct{}{}:
	default: // a token is waiting already
	}
}

func (c *counter) value() int { return int(c.n.Load()) }

// waitSum waits until the counters (of this tally) add up to at least want,
// failing the test after within, and returns the sum.
func (tl *tally) waitSum(t *testing.T, want int, within time.Duration, cs ...*counter) int {
	t.Helper()
	deadline := time.After(within)
	for {
		sum := 0
		for _, c := range cs {
			sum += c.value()
		}
		if sum >= want {
			return sum
		}
		select {
		case <-tl.changed:
		case <-deadline:
			t.Fatalf("counters reached %d of %d within %v", sum, want, within)
		}
	}
}

func appendOne(t *testing.T, s storage.Store, subject string, e domain.NewEvent) domain.Event {
	t.Helper()
	res, err := s.Append(context.Background(), subject, []domain.NewEvent{e}, domain.AppendOptions{})
	if err != nil {
		t.Fatalf("append to %s: %v", subject, err)
	}
	return res.Events[0]
}

// triggerMessage is the stream message the coordinator makes of a stored
// flow.trigger event.
func triggerMessage(e domain.Event) stream.Message {
	data, _ := json.Marshal(map[string]any{"flowName": e.FlowName, "runId": e.RunID, "event": e})
	return stream.Message{Type: handlers.TriggerType, EventID: e.ID, Timestamp: e.TS, Data: data}
}

func TestTriggerStartsEachFlowExactlyOnce(t *testing.T) {
	mem := newMemoryBackend(t)
	tl := newTally()
	handledA, handledB, handledOther := tl.counter(), tl.counter(), tl.counter()
	trigger := func(group string, c *counter) func(n *node) []router.Wiring {
		return func(n *node) []router.Wiring {
			return []router.Wiring{handlers.NewTrigger(n.subscriber(t, stream.Competing(group)), n.store, c)}
		}
	}
	a := startNode(t, mem, "inst-a", nil, trigger(handlers.TriggersGroup, handledA))
	startNode(t, mem, "inst-b", a, trigger(handlers.TriggersGroup, handledB))
	// A member of another group sees every trigger too, as an instance that
	// claimed a message its holder is still working on would: each trigger
	// is then started twice at about the same time.
	startNode(t, mem, "inst-c", a, trigger("triggers-elsewhere", handledOther))
	starts := a.tail(t, "store-sync:append:nq:flow:*")

	const triggers = 30
	var stored []domain.Event
	for i := range triggers {
		e := domain.NewEvent{Type: handlers.TriggerType, FlowName: "ingest"}
		if i%3 != 0 {
			e.Data = json.RawMessage(fmt.Sprintf(`{"n":%d}`, i))
		}
		if i%2 == 0 {
			e.ID = fmt.Sprintf("trig-%d", i) // client-chosen; the others are server-made
		}
		subject := "triggers:x"
		if i%5 == 0 {
			subject = "triggers:y"
		}
		ev := appendOne(t, a.store, subject, e)
		stored = append(stored, ev)
		// Every trigger is delivered twice to its group.
		if err := a.pub.Publish("flow:trigger:ingest", stream.NewWatermillMessage(triggerMessage(ev))); err != nil {
			t.Fatal(err)
		}
	}
	// The same client-chosen id in another subject is another trigger.
	stored = append(stored, appendOne(t, a.store, "triggers:z", domain.NewEvent{ID: "trig-0", Type: handlers.TriggerType, FlowName: "ingest"}))

	n := len(stored)
	tl.waitSum(t, 2*(n-1)+1, 10*time.Second, handledA, handledB)
	tl.waitSum(t, 2*(n-1)+1, 10*time.Second, handledOther)
	t.Logf("the group's members handled %d and %d deliveries", handledA.value(), handledB.value())

	runs := map[string]bool{}
	for _, trig := range stored {
		runID := handlers.TriggerRunID(trig.Subject, trig.ID)
		if runs[runID] {
			t.Fatalf("two triggers map to run %s", runID)
		}
		runs[runID] = true
		evs, err := a.store.Read(context.Background(), domain.FlowSubject(runID), domain.ReadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) != 1 {
			t.Fatalf("trigger %s/%s: run %s holds %d events, want one flow.start", trig.Subject, trig.ID, runID, len(evs))
		}
		e := evs[0]
		if e.Type != "flow.start" || e.Seq != 1 || e.FlowName != "ingest" || e.RunID != runID || e.ID != handlers.TriggerStartID(runID) {
			t.Fatalf("trigger %s: start event %+v", trig.ID, e)
		}
		var d handlers.TriggerStart
		if err := json.Unmarshal(e.Data, &d); err != nil {
			t.Fatal(err)
		}
		if d.Trigger != trig.ID || d.TriggerSubject != trig.Subject || string(d.Input) != string(trig.Data) {
			t.Fatalf("trigger %s: start data %s", trig.ID, e.Data)
		}
	}
	// Each run's start reached the stream once (the appends that found it
	// stored wrote nothing).
	seen := map[string]int{}
	for len(seen) < n {
		m := next(t, starts, 10*time.Second)
		var d struct{ Event domain.Event }
		_ = json.Unmarshal(m.Data, &d)
		if !runs[d.Event.RunID] {
			t.Fatalf("an unexpected run started: %s", m.Data)
		}
		seen[d.Event.RunID]++
	}
	for id, c := range seen {
		if c != 1 {
			t.Errorf("run %s started %d times", id, c)
		}
	}
}

func TestTriggerWithoutFlowNameIsPoisonAndDoesNotBlock(t *testing.T) {
	mem := newMemoryBackend(t)
	tl := newTally()
	handled := tl.counter()
	a := startNode(t, mem, "inst-a", nil, func(n *node) []router.Wiring {
		return []router.Wiring{handlers.NewTrigger(n.subscriber(t, stream.Competing(handlers.TriggersGroup)), n.store, handled)}
	})
	poison := a.tail(t, "poison:*")
	bad := stream.Message{Type: handlers.TriggerType, EventID: "bad-trigger", Timestamp: time.Now(),
		Data: json.RawMessage(`{"event":{"id":"bad-trigger","subject":"triggers:x","type":"flow.trigger"}}`)}
	if err := a.pub.Publish("flow:trigger:x", stream.NewWatermillMessage(bad)); err != nil {
		t.Fatal(err)
	}
	good := appendOne(t, a.store, "triggers:x", domain.NewEvent{Type: handlers.TriggerType, FlowName: "ingest"})
	if m := next(t, poison, 10*time.Second); m.EventID != "bad-trigger" || m.Topic != "poison:router" {
		t.Fatalf("poison topic got %s %s", m.Topic, m.EventID)
	}
	tl.waitSum(t, 1, 10*time.Second, handled)
	evs, err := a.store.Read(context.Background(), domain.FlowSubject(handlers.TriggerRunID(good.Subject, good.ID)), domain.ReadOptions{})
	if err != nil || len(evs) != 1 {
		t.Fatalf("the trigger after the poison one started %d events (%v)", len(evs), err)
	}
}

func TestTriggerRunID(t *testing.T) {
	a := handlers.TriggerRunID("triggers:x", "e1")
	if a != handlers.TriggerRunID("triggers:x", "e1") {
		t.Fatal("TriggerRunID is not deterministic")
	}
	if a == handlers.TriggerRunID("triggers:y", "e1") || a == handlers.TriggerRunID("triggers:x", "e2") {
		t.Fatal("different triggers share a run id")
	}
	long := handlers.TriggerRunID(strings.Repeat("s", 256), strings.Repeat("i", 256))
	if err := domain.ValidateSubject(domain.FlowSubject(long)); err != nil {
		t.Fatalf("run id of the longest names: %v", err)
	}
	if err := domain.ValidateEventID(handlers.TriggerStartID(long)); err != nil {
		t.Fatalf("start id of the longest names: %v", err)
	}
}
