package handlers_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"

	"github.com/nvent/nvent/internal/bus"
	"github.com/nvent/nvent/internal/domain"
	"github.com/nvent/nvent/internal/feed"
	"github.com/nvent/nvent/internal/handlers"
	"github.com/nvent/nvent/internal/router"
	"github.com/nvent/nvent/internal/storage/memory"
	"github.com/nvent/nvent/internal/stream"
)

// pipeline is one in-process instance: a memory store behind the feed, the
// bus, a memory stream and the router running the coordinator.
type pipeline struct {
	store *feed.Store
	tail  chan stream.Message
}

func startPipeline(t *testing.T, ch handlers.Channels) *pipeline {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	wlog := watermill.NopLogger{}
	b, closeBus, err := bus.New(wlog)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(closeBus)
	s, err := stream.New(stream.Config{Backend: stream.BackendMemory, InstanceID: "inst-a"}, wlog)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	pub, err := s.NewPublisher()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pub.Close() })

	// Everything that reaches the stream, in arrival order.
	sub, err := s.NewSubscriber(stream.Broadcast())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	msgs, err := sub.Subscribe(ctx, "*")
	if err != nil {
		t.Fatal(err)
	}
	p := &pipeline{tail: make(chan stream.Message, 1000)}
	go func() {
		for msg := range msgs {
			m, err := stream.FromWatermill(msg)
			if err != nil {
				t.Errorf("undecodable stream message: %v", err)
			}
			msg.Ack()
			p.tail <- m
		}
	}()

	life := router.NewLifecycle()
	r, err := router.New(router.Config{}, pub, []router.Wiring{handlers.NewStreamCoordinator(ch, b, pub)}, log, life)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("router: %v", err)
		}
	})
	select {
	case <-r.Running():
	case <-time.After(10 * time.Second):
		t.Fatal("router did not start")
	}
	store := memory.New()
	t.Cleanup(func() { _ = store.Close() })
	p.store = feed.New(store, b, log, life.Started())
	go func() { _ = p.store.Run(ctx) }()
	return p
}

// collectUntil gathers stream messages until done says it has enough.
func (p *pipeline) collectUntil(t *testing.T, done func([]stream.Message) bool) []stream.Message {
	t.Helper()
	var got []stream.Message
	deadline := time.After(10 * time.Second)
	for !done(got) {
		select {
		case m := <-p.tail:
			got = append(got, m)
		case <-deadline:
			t.Fatalf("stream messages within 10s: %v", topics(got))
		}
	}
	return got
}

// atLeast is a collectUntil condition: every topic has its count.
func atLeast(want map[string]int) func([]stream.Message) bool {
	return func(got []stream.Message) bool {
		for topic, n := range want {
			if count(got, topic) < n {
				return false
			}
		}
		return true
	}
}

func topics(ms []stream.Message) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.Topic
	}
	return out
}

// change makes one of each kind of change and a final marker key.
func (p *pipeline) change(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	for _, ev := range []domain.NewEvent{{Type: "flow.start", FlowName: "billing"}, {Type: "step.completed"}, {Type: "note"}} {
		if _, err := p.store.Append(ctx, "nq:flow:r1", []domain.NewEvent{ev}, domain.AppendOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := p.store.Append(ctx, "triggers", []domain.NewEvent{{Type: "flow.trigger", FlowName: "billing"}}, domain.AppendOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.store.SaveDocument(ctx, "users", "u1", json.RawMessage(`{}`), domain.SaveOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := p.store.DeleteDocument(ctx, "users", "u1", domain.SaveOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.store.SetKey(ctx, "marker", json.RawMessage(`1`), 0); err != nil {
		t.Fatal(err)
	}
}
func TestCoordinatorRoutesEveryChangeToItsChannels(t *testing.T) {
	p := startPipeline(t, handlers.Channels{StoreSync: true, FlowEvents: true, ClientMessages: true})
	p.change(t)
	want := map[string]int{
		"store-sync:append:nq:flow:r1": 3,
		"store-sync:append:triggers":   1,
		"store-sync:save:users:u1":     1,
		"store-sync:delete:users:u1":   1,
		"store-sync:kv:marker":         1,
		"flow:event:r1":                2, // flow.start, step.completed; "note" is not lifecycle
		"flow:trigger:billing":         1,
		"client:flow:r1":               3, // every event of the run
	}
	got := p.collectUntil(t, atLeast(want))
	for topic, n := range want {
		if c := count(got, topic); c != n {
			t.Errorf("%s: %d messages, want %d (all: %v)", topic, c, n, topics(got))
		}
	}
	for _, m := range got {
		if m.InstanceID != "inst-a" || m.EventID == "" || m.Timestamp.IsZero() || m.Type == "" {
			t.Errorf("message %+v lacks instance id, event id, timestamp or type", m)
		}
		if m.Topic == "store-sync:append:nq:flow:r1" {
			var d struct {
				Subject string
				Event   domain.Event
			}
			if err := json.Unmarshal(m.Data, &d); err != nil || d.Subject != "nq:flow:r1" || d.Event.ID != m.EventID || m.Type != "store.append" {
				t.Errorf("append message %s has the wrong shape (%v)", m.Data, err)
			}
		}
	}
	// Per-subject order holds on every channel.
	var seqs []int64
	for _, m := range got {
		if m.Topic == "client:flow:r1" {
			var d struct{ Event domain.Event }
			_ = json.Unmarshal(m.Data, &d)
			seqs = append(seqs, d.Event.Seq)
		}
	}
	if !slices.Equal(seqs, []int64{1, 2, 3}) {
		t.Errorf("client messages came in seq order %v", seqs)
	}
}

func count(ms []stream.Message, topic string) int {
	n := 0
	for _, m := range ms {
		if m.Topic == topic {
			n++
		}
	}
	return n
}

func TestDisabledChannelsPublishNothing(t *testing.T) {
	storeSync := map[string]int{"store-sync:append:nq:flow:r1": 3, "store-sync:append:triggers": 1, "store-sync:save:users:u1": 1, "store-sync:delete:users:u1": 1, "store-sync:kv:marker": 1}
	flow := map[string]int{"flow:event:r1": 2, "flow:trigger:billing": 1}
	client := map[string]int{"client:flow:r1": 3}
	for _, tc := range []struct {
		name string
		ch   handlers.Channels
		off  []string // topic prefixes that must not appear
		want []map[string]int
	}{
		{"defaults: client messages off", handlers.Channels{StoreSync: true, FlowEvents: true}, []string{"client:"}, []map[string]int{storeSync, flow}},
		{"flow events off", handlers.Channels{StoreSync: true, ClientMessages: true}, []string{"flow:"}, []map[string]int{storeSync, client}},
		{"store sync off", handlers.Channels{FlowEvents: true, ClientMessages: true}, []string{"store-sync:"}, []map[string]int{flow, client}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := startPipeline(t, tc.ch)
			p.change(t)
			want := map[string]int{}
			for _, w := range tc.want {
				maps.Copy(want, w)
			}
			// Once every enabled channel delivered all it should, a disabled
			// one (which has no handler at all) has had every chance too.
			got := p.collectUntil(t, atLeast(want))
			for _, m := range got {
				for _, prefix := range tc.off {
					if strings.HasPrefix(m.Topic, prefix) {
						t.Errorf("disabled channel published %s", m.Topic)
					}
				}
			}
			for topic, n := range want {
				if c := count(got, topic); c != n {
					t.Errorf("%s: %d messages, want %d", topic, c, n)
				}
			}
		})
	}
}

// TestWithEventMatchesMapEncoding: the hand-built message data is the bytes
// json.Marshal gives for the same map.
func TestWithEventMatchesMapEncoding(t *testing.T) {
	e := &domain.Event{ID: "e<1>", Subject: "nq:flow:r&1", Seq: 3, Type: "step.completed", RunID: "r&1", FlowName: "bill\"ing",
		Data: json.RawMessage(`{"a": [1, "<b>"]}`), TS: time.Date(2026, 11, 28, 1, 2, 3, 4_000_000, time.UTC)}
	for _, tc := range []struct {
		kv   []string
		want map[string]any
	}{
		{[]string{"subject", e.Subject}, map[string]any{"subject": e.Subject, "event": e}},
		{[]string{"runId", e.RunID}, map[string]any{"runId": e.RunID, "event": e}},
		{[]string{"flowName", e.FlowName, "runId", e.RunID}, map[string]any{"flowName": e.FlowName, "runId": e.RunID, "event": e}},
	} {
		want, err := json.Marshal(tc.want)
		if err != nil {
			t.Fatal(err)
		}
		if got := handlers.WithEvent(e, tc.kv...); string(got) != string(want) {
			t.Errorf("got  %s\nwant %s", got, want)
		}
	}
}
