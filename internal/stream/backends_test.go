package stream

import (
	"context"
	"encoding/json"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"

	"github.com/nvent/nvent/internal/stream/streamtest"
)

// This file is the contract suite of the stream layer: every test runs
// against every backend through forEachBackend.

const waitFor = 15 * time.Second

var testLogger = watermill.NopLogger{}

var backendKinds = []string{BackendMemory, BackendRedis}

// env is one isolated deployment of a backend: a Memory of its own, or a
// Redis key prefix of its own (deleted when the test ends).
type env struct {
	layout Layout
	mem    *Memory
	url    string
}

func newEnv(t *testing.T, kind string) *env {
	t.Helper()
	e := &env{}
	switch kind {
	case BackendMemory:
		e.mem = NewMemory(testLogger)
		t.Cleanup(func() { _ = e.mem.Close() })
	case BackendRedis:
		e.url = streamtest.RedisURL(t)
		e.layout.KeyPrefix = streamtest.KeyPrefix(t, e.url)
	}
	e.layout.setDefaults()
	return e
}

// forEachBackend runs f once per backend kind, in parallel subtests.
func forEachBackend(t *testing.T, f func(t *testing.T, kind string)) {
	for _, kind := range backendKinds {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			f(t, kind)
		})
	}
}

// backend returns the backend of one simulated process: the env's Memory, or
// a Redis of its own (own clients) on the env's server.
func (e *env) backend(t *testing.T, rc RedisConfig) Backend {
	t.Helper()
	if e.mem != nil {
		return e.mem
	}
	rc.URL = e.url
	if rc.BlockTime == 0 {
		rc.BlockTime = 100 * time.Millisecond
	}
	r, err := NewRedis(rc, testLogger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

// instance simulates one nvent process attached to the env.
func (e *env) instance(t *testing.T, id string, rc RedisConfig) *Stream {
	t.Helper()
	return NewWithBackend(e.backend(t, rc), e.layout, id, testLogger)
}

func (e *env) redisClient(t *testing.T) *redis.Client {
	t.Helper()
	opts, err := redis.ParseURL(e.url)
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(opts)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// inject adds a raw entry to a channel's stream behind the Publisher's back,
// as `redis-cli XADD` by someone else would.
func (e *env) inject(t *testing.T, channel string, fields map[string]any) {
	t.Helper()
	stream := e.layout.KeyPrefix + channel
	var err error
	if e.mem != nil {
		err = e.mem.add(stream, 0, fields)
	} else {
		err = e.redisClient(t).XAdd(context.Background(), &redis.XAddArgs{Stream: stream, Values: fields}).Err()
	}
	if err != nil {
		t.Fatalf("error injecting entry: %v", err)
	}
}

// length returns the number of entries in a channel's stream.
func (e *env) length(t *testing.T, channel string) int64 {
	t.Helper()
	stream := e.layout.KeyPrefix + channel
	if e.mem != nil {
		e.mem.mu.Lock()
		defer e.mem.mu.Unlock()
		return int64(len(e.mem.stream(stream).entries))
	}
	n, err := e.redisClient(t).XLen(context.Background(), stream).Result()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func newTestPublisher(t *testing.T, st *Stream) *Publisher {
	t.Helper()
	p, err := st.NewPublisher()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func newTestSubscriber(t *testing.T, st *Stream, d Delivery) *Subscriber {
	t.Helper()
	s, err := st.NewSubscriber(d)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("error closing subscriber: %v", err)
		}
	})
	return s
}

func subscribe(t *testing.T, s *Subscriber, pattern string) <-chan *message.Message {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ch, err := s.Subscribe(ctx, pattern)
	if err != nil {
		t.Fatalf("Subscribe(%q): %v", pattern, err)
	}
	return ch
}

// publish publishes one message whose data names its id, and returns the id.
func publish(t *testing.T, p *Publisher, topic string, md ...string) string {
	t.Helper()
	id := watermill.NewUUID()
	data, _ := json.Marshal(map[string]string{"id": id})
	msg := NewWatermillMessage(Message{Type: "test.event", Data: data, EventID: id})
	for i := 0; i+1 < len(md); i += 2 {
		msg.Metadata.Set(md[i], md[i+1])
	}
	if err := p.Publish(topic, msg); err != nil {
		t.Fatalf("Publish(%q): %v", topic, err)
	}
	return id
}

// receive acks and returns the next n messages of ch.
func receive(t *testing.T, ch <-chan *message.Message, n int) []*message.Message {
	t.Helper()
	var got []*message.Message
	deadline := time.After(waitFor)
	for len(got) < n {
		select {
		case msg, ok := <-ch:
			if !ok {
				t.Fatalf("channel closed after %d of %d messages", len(got), n)
			}
			msg.Ack()
			got = append(got, msg)
		case <-deadline:
			t.Fatalf("received %d of %d messages in %v", len(got), n, waitFor)
		}
	}
	return got
}

func ids(msgs []*message.Message) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = m.UUID
	}
	return out
}

func TestPatternSubscriptions(t *testing.T) {
	forEachBackend(t, func(t *testing.T, kind string) {
		e := newEnv(t, kind)
		st := e.instance(t, "i1", RedisConfig{})
		sub := newTestSubscriber(t, st, Broadcast())
		const (
			A = "store-sync:append:orders"
			B = "store-sync:append:nq:flow:r1"
			C = "store-sync:save:users:1"
			D = "store-sync:delete:users:1"
			E = "store-sync:kv:counter"
			F = "flow:event:r1"
			G = "flow:event:r2"
			H = "flow:trigger:nightly"
			I = "client:flow:r1"
			J = "client:ui:runs"
			K = "custom:x:1"
			// Sentinels, published last: a subscription has seen every
			// earlier message of its streams once it has seen its sentinels
			// (order is kept per physical stream).
			S1 = "store-sync:append:nq:flow:end"
			S2 = "flow:event:x:flow:end"
			S3 = "client:flow:end"
			S4 = "custom:x:end"
			S5 = F
		)
		want := map[string][]string{
			"store-sync:append:*": {A, B, S1},
			"*":                   {A, B, C, D, E, F, G, H, I, J, S1, S2, S3, S5},
			"flow:event:r1":       {F, S5},
			"flow:*":              {F, G, H, S2, S5},
			"*:flow:*":            {B, I, S1, S2, S3},
			"custom:*":            {K, S4},
		}
		chans := map[string]<-chan *message.Message{}
		for pattern := range want {
			chans[pattern] = subscribe(t, sub, pattern)
		}
		pub := newTestPublisher(t, st)
		for _, topic := range []string{A, B, C, D, E, F, G, H, I, J, K} {
			publish(t, pub, topic)
		}
		for _, topic := range []string{S1, S2, S3, S4, S5} {
			publish(t, pub, topic, "sentinel", "1")
		}
		for pattern, topics := range want {
			sentinels := 0
			for _, topic := range topics {
				if slices.Contains([]string{S1, S2, S3, S4}, topic) {
					sentinels++
				}
			}
			if slices.Contains(topics, S5) {
				sentinels++
			}
			var got []string
			deadline := time.After(waitFor)
			for seen := 0; seen < sentinels; {
				select {
				case msg := <-chans[pattern]:
					msg.Ack()
					got = append(got, msg.Metadata.Get(MetadataTopic))
					if msg.Metadata.Get("sentinel") == "1" {
						seen++
					}
				case <-deadline:
					t.Fatalf("%q: got %q before the deadline", pattern, got)
				}
			}
			sort.Strings(got)
			sort.Strings(topics)
			if !slices.Equal(got, topics) {
				t.Errorf("%q received\n %q\nwant\n %q", pattern, got, topics)
			}
		}
	})
}

func TestBroadcastReachesEveryInstance(t *testing.T) {
	forEachBackend(t, func(t *testing.T, kind string) {
		e := newEnv(t, kind)
		var chans []<-chan *message.Message
		for _, id := range []string{"a", "b"} {
			st := e.instance(t, id, RedisConfig{})
			chans = append(chans, subscribe(t, newTestSubscriber(t, st, Broadcast()), "store-sync:append:*"))
		}
		pub := newTestPublisher(t, e.instance(t, "p", RedisConfig{}))
		var sent []string
		for range 50 {
			sent = append(sent, publish(t, pub, "store-sync:append:s1"))
		}
		for i, ch := range chans {
			got := receive(t, ch, len(sent))
			if !slices.Equal(ids(got), sent) {
				t.Errorf("subscriber %d got %v, want %v in order", i, ids(got), sent)
			}
			for _, m := range got {
				if m.Metadata.Get(MetadataInstanceID) != "p" {
					t.Fatalf("instanceId %q, want p", m.Metadata.Get(MetadataInstanceID))
				}
			}
		}
	})
}

func TestCompetingDeliversEachMessageToOneMember(t *testing.T) {
	forEachBackend(t, func(t *testing.T, kind string) {
		e := newEnv(t, kind)
		const members, total = 3, 300
		type receipt struct {
			member int
			id     string
		}
		receipts := make(chan receipt, total*2)
		done := make(chan struct{})
		defer close(done)
		var wg sync.WaitGroup
		t.Cleanup(wg.Wait)
		for i := range members {
			st := e.instance(t, "m"+string(rune('0'+i)), RedisConfig{})
			ch := subscribe(t, newTestSubscriber(t, st, Competing("workers")), "flow:event:*")
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case msg, ok := <-ch:
						if !ok {
							return
						}
						msg.Ack()
						receipts <- receipt{i, msg.UUID}
					case <-done:
						return
					}
				}
			}()
		}
		// Another group with the same pattern gets every message again.
		audit := subscribe(t, newTestSubscriber(t, e.instance(t, "audit", RedisConfig{}), Competing("audit")), "flow:event:*")

		pub := newTestPublisher(t, e.instance(t, "p", RedisConfig{}))
		sent := map[string]bool{}
		for i := range total {
			sent[publish(t, pub, "flow:event:r"+string(rune('0'+i%5)))] = true
		}
		perMember := make([]int, members)
		seen := map[string]int{}
		deadline := time.After(waitFor)
		for len(seen) < total {
			select {
			case r := <-receipts:
				perMember[r.member]++
				seen[r.id]++
			case <-deadline:
				t.Fatalf("members received %d distinct of %d messages", len(seen), total)
			}
		}
		for id, n := range seen {
			if !sent[id] || n != 1 {
				t.Fatalf("message %s received %d times (sent: %v)", id, n, sent[id])
			}
		}
		busy := 0
		for _, n := range perMember {
			if n > 0 {
				busy++
			}
		}
		t.Logf("messages per member: %v", perMember)
		if busy < 2 {
			t.Errorf("only %d of %d members received messages: %v", busy, members, perMember)
		}
		got := receive(t, audit, total)
		for _, id := range ids(got) {
			if !sent[id] {
				t.Fatalf("audit group got unknown message %s", id)
			}
			delete(sent, id)
		}
	})
}

func TestCompetingRedeliversWhenMemberDies(t *testing.T) {
	forEachBackend(t, func(t *testing.T, kind string) {
		e := newEnv(t, kind)
		rc := RedisConfig{MaxIdleTime: 300 * time.Millisecond, ClaimInterval: 100 * time.Millisecond}
		subA := newTestSubscriber(t, e.instance(t, "a", rc), Competing("workers"))
		chA := subscribe(t, subA, "flow:trigger:*")
		pub := newTestPublisher(t, e.instance(t, "p", rc))
		m1 := publish(t, pub, "flow:trigger:nightly")
		select {
		case msg := <-chA:
			if msg.UUID != m1 {
				t.Fatalf("a got %s, want %s", msg.UUID, m1)
			}
			// a dies without acking.
		case <-time.After(waitFor):
			t.Fatal("a received nothing")
		}
		chB := subscribe(t, newTestSubscriber(t, e.instance(t, "b", rc), Competing("workers")), "flow:trigger:*")
		if err := subA.Close(); err != nil {
			t.Fatal(err)
		}
		if got := receive(t, chB, 1); got[0].UUID != m1 {
			t.Fatalf("b got %s, want the message a left: %s", got[0].UUID, m1)
		}
		m2 := publish(t, pub, "flow:trigger:nightly")
		if got := receive(t, chB, 1); got[0].UUID != m2 {
			t.Fatalf("b got %s, want %s", got[0].UUID, m2)
		}
	})
}

func TestPoisonEntryDoesNotStopDelivery(t *testing.T) {
	forEachBackend(t, func(t *testing.T, kind string) {
		e := newEnv(t, kind)
		st := e.instance(t, "i", RedisConfig{})
		poison := subscribe(t, newTestSubscriber(t, st, Broadcast()), PoisonChannel+":*")
		live := []<-chan *message.Message{
			subscribe(t, newTestSubscriber(t, st, Broadcast()), "store-sync:append:*"),
			subscribe(t, newTestSubscriber(t, st, Competing("g")), "store-sync:append:*"),
		}
		pub := newTestPublisher(t, st)
		before := publish(t, pub, "store-sync:append:s")
		bad := []map[string]any{
			{"foo": "bar"},
			{"message": "not json"},
			{"message": `{"topic":"store-sync:append:s","timestamp":"2025-01-01T00:00:00.000Z"}`},
		}
		for _, fields := range bad {
			e.inject(t, "store-sync", fields)
		}
		after := publish(t, pub, "store-sync:append:s")
		for i, ch := range live {
			if got := ids(receive(t, ch, 2)); !slices.Equal(got, []string{before, after}) {
				t.Errorf("subscription %d got %v, want %v", i, got, []string{before, after})
			}
		}
		reports := receive(t, poison, len(bad)*len(live))
		byEvent := map[string]int{}
		reasons := map[string]bool{}
		for _, msg := range reports {
			m, err := FromWatermill(msg)
			if err != nil {
				t.Fatal(err)
			}
			var r PoisonReport
			if err := json.Unmarshal(m.Data, &r); err != nil {
				t.Fatal(err)
			}
			if m.Topic != "poison:store-sync" || m.Type != "stream.poison" || r.Stream != e.layout.KeyPrefix+"store-sync" || len(r.Fields) == 0 {
				t.Errorf("unexpected report %s: %s", m.Topic, m.Data)
			}
			byEvent[m.EventID]++
			reasons[r.Reason] = true
		}
		if len(byEvent) != len(bad) {
			t.Errorf("%d distinct poison reports, want %d: %v", len(byEvent), len(bad), reasons)
		}
		for id, n := range byEvent {
			if n != len(live) {
				t.Errorf("report %s came %d times, want once per subscription", id, n)
			}
		}
		for _, want := range []string{`missing field "message"`, "error decoding stream message: invalid JSON", "error decoding stream message: missing eventId"} {
			found := false
			for r := range reasons {
				found = found || len(r) >= len(want) && r[:len(want)] == want
			}
			if !found {
				t.Errorf("no report with reason %q in %v", want, reasons)
			}
		}
	})
}

func TestIndependentInstancesDoNotInterfere(t *testing.T) {
	forEachBackend(t, func(t *testing.T, kind string) {
		envs := []*env{newEnv(t, kind), newEnv(t, kind)}
		var pubs []*Publisher
		var chans []<-chan *message.Message
		var subs []*Subscriber
		for i, e := range envs {
			st := e.instance(t, []string{"x", "y"}[i], RedisConfig{})
			pubs = append(pubs, newTestPublisher(t, st))
			subs = append(subs, newTestSubscriber(t, st, Broadcast()))
			chans = append(chans, subscribe(t, subs[i], "*"))
		}
		sent := [][]string{nil, nil}
		for range 10 {
			for i, p := range pubs {
				sent[i] = append(sent[i], publish(t, p, "client:ui:runs"))
			}
		}
		for i := range envs {
			if got := ids(receive(t, chans[i], 10)); !slices.Equal(got, sent[i]) {
				t.Errorf("instance %d got %v, want only its own %v", i, got, sent[i])
			}
		}
		// Closing one leaves the other working.
		if err := subs[0].Close(); err != nil {
			t.Fatal(err)
		}
		if err := pubs[0].Close(); err != nil {
			t.Fatal(err)
		}
		last := publish(t, pubs[1], "client:ui:runs")
		if got := receive(t, chans[1], 1); got[0].UUID != last {
			t.Fatalf("instance 1 got %s, want %s", got[0].UUID, last)
		}
	})
}

func TestStartPositions(t *testing.T) {
	forEachBackend(t, func(t *testing.T, kind string) {
		e := newEnv(t, kind)
		st := e.instance(t, "i", RedisConfig{})
		pub := newTestPublisher(t, st)
		old := publish(t, pub, "client:ui:runs")
		latest := subscribe(t, newTestSubscriber(t, st, Broadcast()), "client:ui:*")
		oldest := subscribe(t, newTestSubscriber(t, st, Delivery{Mode: ModeBroadcast, Start: StartOldest}), "client:ui:*")
		groupOldest := subscribe(t, newTestSubscriber(t, st, Delivery{Mode: ModeCompeting, Group: "g", Start: StartOldest}), "client:ui:*")
		groupLatest := subscribe(t, newTestSubscriber(t, st, Competing("g2")), "client:ui:*")
		fresh := publish(t, pub, "client:ui:runs")
		for name, c := range map[string]struct {
			ch   <-chan *message.Message
			want []string
		}{
			"broadcast latest": {latest, []string{fresh}},
			"broadcast oldest": {oldest, []string{old, fresh}},
			"group oldest":     {groupOldest, []string{old, fresh}},
			"group latest":     {groupLatest, []string{fresh}},
		} {
			if got := ids(receive(t, c.ch, len(c.want))); !slices.Equal(got, c.want) {
				t.Errorf("%s: got %v, want %v", name, got, c.want)
			}
		}
	})
}

func TestNackRedelivers(t *testing.T) {
	forEachBackend(t, func(t *testing.T, kind string) {
		e := newEnv(t, kind)
		st := e.instance(t, "i", RedisConfig{})
		for _, d := range []Delivery{Broadcast(), Competing("g")} {
			ch := subscribe(t, newTestSubscriber(t, st, d), "client:ui:*")
			id := publish(t, newTestPublisher(t, st), "client:ui:runs")
			for range 3 {
				select {
				case msg := <-ch:
					if msg.UUID != id {
						t.Fatalf("%v: got %s, want %s", d.Mode, msg.UUID, id)
					}
					msg.Nack()
				case <-time.After(waitFor):
					t.Fatalf("%v: nacked message not redelivered", d.Mode)
				}
			}
			if got := receive(t, ch, 1); got[0].UUID != id {
				t.Fatalf("%v: got %s after nacks, want %s", d.Mode, got[0].UUID, id)
			}
		}
	})
}

func TestLifecycle(t *testing.T) {
	forEachBackend(t, func(t *testing.T, kind string) {
		e := newEnv(t, kind)
		st := e.instance(t, "i", RedisConfig{})
		if err := st.Ping(context.Background()); err != nil {
			t.Fatal(err)
		}
		pub := newTestPublisher(t, st)
		sub := newTestSubscriber(t, st, Broadcast())

		// Cancelling the ctx closes the channel.
		ctx, cancel := context.WithCancel(context.Background())
		ch, err := sub.Subscribe(ctx, "*")
		if err != nil {
			t.Fatal(err)
		}
		cancel()
		select {
		case _, ok := <-ch:
			if ok {
				t.Fatal("message after cancel on an idle stream")
			}
		case <-time.After(waitFor):
			t.Fatal("channel not closed after ctx was cancelled")
		}

		// Closing a publisher does not affect a subscriber (nor, on Redis,
		// its client).
		ch2 := subscribe(t, sub, "client:*")
		if err := pub.Close(); err != nil {
			t.Fatal(err)
		}
		if err := pub.Publish("client:ui:runs", message.NewMessage(watermill.NewUUID(), nil)); err == nil {
			t.Fatal("Publish after Close succeeded")
		}
		id := publish(t, newTestPublisher(t, st), "client:ui:runs")
		if got := receive(t, ch2, 1); got[0].UUID != id {
			t.Fatalf("got %s, want %s", got[0].UUID, id)
		}

		// Close ends subscriptions and refuses new ones.
		if err := sub.Close(); err != nil {
			t.Fatal(err)
		}
		if _, ok := <-ch2; ok {
			t.Fatal("channel open after Close")
		}
		if _, err := sub.Subscribe(context.Background(), "*"); err == nil {
			t.Fatal("Subscribe after Close succeeded")
		}
		if err := sub.Close(); err != nil {
			t.Fatal("second Close:", err)
		}

		// Invalid input.
		if err := newTestPublisher(t, st).Publish("client:*", message.NewMessage("x", nil)); err == nil {
			t.Error("Publish to a pattern succeeded")
		}
		if _, err := newTestSubscriber(t, st, Broadcast()).Subscribe(context.Background(), ""); err == nil {
			t.Error("Subscribe to an empty pattern succeeded")
		}
		for _, d := range []Delivery{Competing(""), Competing("a@b"), {Mode: ModeBroadcast, Group: "g"}} {
			if _, err := st.NewSubscriber(d); err == nil {
				t.Errorf("NewSubscriber(%+v) succeeded", d)
			}
		}
	})
}

func TestTrimming(t *testing.T) {
	forEachBackend(t, func(t *testing.T, kind string) {
		e := newEnv(t, kind)
		e.layout.MaxLen["store-sync"] = 50
		pub := newTestPublisher(t, e.instance(t, "i", RedisConfig{}))
		msgs := make([]*message.Message, 1000)
		for i := range msgs {
			msgs[i] = message.NewMessage(watermill.NewUUID(), []byte(`{}`))
		}
		if err := pub.Publish("store-sync:append:s", msgs...); err != nil {
			t.Fatal(err)
		}
		// "MAXLEN ~" trims whole macro nodes (100 entries by default in Redis).
		if n := e.length(t, "store-sync"); n < 50 || n > 250 {
			t.Errorf("stream holds %d entries after 1000 appends with MaxLen 50", n)
		}
		if n := e.length(t, "flow"); n != 0 {
			t.Errorf("flow stream holds %d entries", n)
		}
	})
}

// TestRedisGroupRecreated checks that a competing subscription survives the
// loss of its consumer group (as after a Redis restart without persistence).
func TestRedisGroupRecreated(t *testing.T) {
	e := newEnv(t, BackendRedis)
	st := e.instance(t, "i", RedisConfig{})
	ch := subscribe(t, newTestSubscriber(t, st, Competing("g")), "flow:event:*")
	pub := newTestPublisher(t, st)
	first := publish(t, pub, "flow:event:r1")
	receive(t, ch, 1)
	if err := e.redisClient(t).XGroupDestroy(context.Background(), e.layout.KeyPrefix+"flow", "g@flow:event:*").Err(); err != nil {
		t.Fatal(err)
	}
	second := publish(t, pub, "flow:event:r1")
	deadline := time.After(waitFor)
	for {
		select {
		case msg := <-ch:
			msg.Ack()
			if msg.UUID == second {
				return
			}
			if msg.UUID != first { // the re-created group starts at the stream's start
				t.Fatalf("unexpected message %s", msg.UUID)
			}
		case <-deadline:
			t.Fatal("no delivery after the consumer group was destroyed")
		}
	}
}

// TestRedisUnreachable checks that publishing to a Redis that is not there
// fails instead of hanging.
func TestRedisUnreachable(t *testing.T) {
	st, err := New(Config{Backend: BackendRedis, RedisURL: "redis://127.0.0.1:1/0?max_retries=-1"}, testLogger)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.Ping(context.Background()); err == nil {
		t.Fatal("Ping succeeded")
	}
	pub, err := st.NewPublisher()
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	if err := pub.Publish("client:ui:runs", message.NewMessage("x", nil)); err == nil {
		t.Fatal("Publish succeeded")
	}
	sub, err := st.NewSubscriber(Broadcast())
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if _, err := sub.Subscribe(context.Background(), "client:*"); err == nil {
		t.Fatal("Subscribe succeeded")
	}
}

func TestNewFromConfig(t *testing.T) {
	if _, err := New(Config{Backend: "nats"}, nil); err == nil {
		t.Error("unknown backend accepted")
	}
	if _, err := New(Config{Backend: BackendRedis}, nil); err == nil {
		t.Error("redis without URL accepted")
	}
	st, err := New(Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if st.InstanceID() == "" || st.Layout().KeyPrefix != DefaultKeyPrefix {
		t.Errorf("defaults not applied: %q %+v", st.InstanceID(), st.Layout())
	}
	if _, ok := st.Backend().(*Memory); !ok {
		t.Errorf("default backend is %T", st.Backend())
	}
}

// TestCompetingGroupIsPerPattern checks that one group name used with two
// patterns on the same channel does not make one pattern ack (and lose) the
// other's messages.
func TestCompetingGroupIsPerPattern(t *testing.T) {
	forEachBackend(t, func(t *testing.T, kind string) {
		e := newEnv(t, kind)
		st := e.instance(t, "i", RedisConfig{})
		events := subscribe(t, newTestSubscriber(t, st, Competing("workers")), "flow:event:*")
		triggers := subscribe(t, newTestSubscriber(t, st, Competing("workers")), "flow:trigger:*")
		pub := newTestPublisher(t, st)
		var wantEvents, wantTriggers []string
		for range 20 {
			wantEvents = append(wantEvents, publish(t, pub, "flow:event:r1"))
			wantTriggers = append(wantTriggers, publish(t, pub, "flow:trigger:f"))
		}
		if got := ids(receive(t, events, 20)); !slices.Equal(got, wantEvents) {
			t.Errorf("events: got %v, want %v", got, wantEvents)
		}
		if got := ids(receive(t, triggers, 20)); !slices.Equal(got, wantTriggers) {
			t.Errorf("triggers: got %v, want %v", got, wantTriggers)
		}
	})
}
