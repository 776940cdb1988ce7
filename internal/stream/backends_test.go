package stream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"

	"github.com/nvent/nvent/internal/stream/streamtest"
	"github.com/nvent/nvent/internal/testenv"
)

// This file is the contract suite of the stream layer: every test runs
// against every backend through forEachBackend.

const waitFor = 15 * time.Second

var testLogger = watermill.NopLogger{}

var backendKinds = []string{BackendMemory, BackendRedis, BackendNATS, BackendAMQP, BackendPostgres}

// env is one isolated deployment of a backend: a Memory of its own, or a
// key prefix of its own on the shared Redis, NATS or RabbitMQ (whose keys,
// streams, exchanges and queues are deleted when the test ends), or a
// Postgres schema of its own (dropped when the test ends).
type env struct {
	kind   string
	layout Layout
	mem    *Memory
	url    string
	schema string // Postgres
	// shared, when set (see share), is the backend of every instance.
	shared Backend
}

// opts tunes one simulated process. ackWait is how long a message of a
// competing group stays with a member that received it and vanished before
// another member gets it: Redis MaxIdleTime (claimed every ackWait/3),
// NATS AckWait, Postgres AckDeadline. AMQP gives it back as soon as the
// member's channel closes.
type opts struct {
	ackWait time.Duration
}

func newEnv(t *testing.T, kind string) *env {
	t.Helper()
	e := &env{kind: kind}
	switch kind {
	case BackendMemory:
		e.mem = NewMemory(testLogger)
		t.Cleanup(func() { _ = e.mem.Close() })
	case BackendRedis:
		e.url = streamtest.RedisURL(t)
		e.layout.KeyPrefix = streamtest.KeyPrefix(t, e.url)
	case BackendNATS:
		e.url = testenv.NATSURL(t)
		e.layout.KeyPrefix = "nvent-test-" + watermill.NewShortUUID() + ":"
		t.Cleanup(func() { e.deleteNATSStreams(t) })
	case BackendAMQP:
		e.url = testenv.AMQPURL(t)
		e.layout.KeyPrefix = "nvent-test-" + watermill.NewShortUUID() + ":"
	case BackendPostgres:
		e.url, e.schema = testenv.PostgresSchema(t)
	default:
		t.Fatalf("unknown backend %q", kind)
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
// a backend of its own (own connections) on the env's server.
func (e *env) backend(t *testing.T, o opts) Backend {
	t.Helper()
	if e.shared != nil {
		return e.shared
	}
	var b Backend
	var err error
	switch e.kind {
	case BackendMemory:
		return e.mem
	case BackendRedis:
		rc := RedisConfig{URL: e.url, BlockTime: 100 * time.Millisecond, MaxIdleTime: o.ackWait, ClaimInterval: o.ackWait / 3}
		b, err = NewRedis(rc, testLogger)
	case BackendNATS:
		b, err = NewNATS(NATSConfig{URL: e.url, AckWait: o.ackWait}, testLogger)
	case BackendAMQP:
		var a *AMQP
		if a, err = NewAMQP(AMQPConfig{URL: e.url}, testLogger); err == nil {
			// Runs after the cleanups registered later (publishers, subscribers).
			t.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				if err := a.forgetDeclared(ctx); err != nil {
					t.Errorf("error deleting the test's exchanges and queues: %v", err)
				}
			})
		}
		b = a
	case BackendPostgres:
		b, err = NewPostgres(PostgresConfig{URL: e.url, Schema: e.schema, AckDeadline: o.ackWait}, testLogger)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// share makes every later instance use one backend, as one process with
// many publishers and subscribers: suites that build dozens of instances
// stay within Postgres' connection limit so.
func (e *env) share(t *testing.T, o opts) {
	t.Helper()
	e.shared = e.backend(t, o)
}

// waitForQueue waits until an AMQP queue exists.
func (e *env) waitForQueue(t *testing.T, name string) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		err := e.amqpChannel(t, func(ch *amqp.Channel) error {
			_, err := ch.QueueDeclarePassive(name, true, false, false, false, nil)
			return err
		})
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("queue %s not declared again within %v: %v", name, waitFor, err)
		}
		<-tick.C
	}
}

// instance simulates one nvent process attached to the env.
func (e *env) instance(t *testing.T, id string, o opts) *Stream {
	t.Helper()
	return NewWithBackend(e.backend(t, o), e.layout, id, testLogger)
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

func (e *env) natsStream(t *testing.T) (jetstream.JetStream, func()) {
	t.Helper()
	conn, err := nats.Connect(e.url)
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(conn)
	if err != nil {
		t.Fatal(err)
	}
	return js, conn.Close
}

// deleteNATSStreams deletes the JetStream streams of the env's prefix.
func (e *env) deleteNATSStreams(t *testing.T) {
	js, done := e.natsStream(t)
	defer done()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	prefix := NATSStreamName(e.layout.KeyPrefix)
	names := js.StreamNames(ctx)
	var mine []string
	for name := range names.Name() {
		if strings.HasPrefix(name, prefix) {
			mine = append(mine, name)
		}
	}
	if err := names.Err(); err != nil {
		t.Errorf("error listing jetstream streams: %v", err)
	}
	for _, name := range mine {
		if err := js.DeleteStream(ctx, name); err != nil {
			t.Errorf("error deleting jetstream stream %s: %v", name, err)
		}
	}
}

func (e *env) pgConn(t *testing.T) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), e.url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

// inject adds a raw message to a channel's stream behind the Publisher's
// back, as someone else writing to the broker would: the "message" field is
// the body (Redis: the field; NATS: the data; AMQP: the body; Postgres: the
// payload), the other fields the headers (Postgres: the metadata column, a
// JSON object of them unless "metadata" is given).
func (e *env) inject(t *testing.T, channel string, fields map[string]any) {
	t.Helper()
	stream := e.layout.KeyPrefix + channel
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	body, _ := fields[fieldMessage].(string)
	others := map[string]string{}
	for k, v := range fields {
		if k != fieldMessage {
			others[k] = v.(string)
		}
	}
	var err error
	switch e.kind {
	case BackendMemory:
		err = e.mem.add(stream, 0, fields)
	case BackendRedis:
		err = e.redisClient(t).XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: fields}).Err()
	case BackendNATS:
		js, done := e.natsStream(t)
		defer done()
		hdr := nats.Header{}
		for k, v := range others {
			hdr[k] = []string{v}
		}
		_, err = js.PublishMsg(ctx, &nats.Msg{Subject: NATSStreamName(stream), Data: []byte(body), Header: hdr})
	case BackendAMQP:
		headers := amqp.Table{}
		for k, v := range others {
			headers[k] = v
		}
		err = e.amqpChannel(t, func(ch *amqp.Channel) error {
			if err := ch.Confirm(false); err != nil {
				return err
			}
			c, err := ch.PublishWithDeferredConfirmWithContext(ctx, AMQPExchange(stream), "", true, false, amqp.Publishing{Headers: headers, Body: []byte(body)})
			if err != nil {
				return err
			}
			if ok, err := c.WaitContext(ctx); err != nil || !ok {
				return fmt.Errorf("not confirmed: %v", err)
			}
			return nil
		})
	case BackendPostgres:
		var payload []byte
		if _, ok := fields[fieldMessage]; ok {
			payload = []byte(body)
		}
		md, ok := others[fieldMetadata]
		if !ok {
			b, _ := json.Marshal(others)
			md = string(b)
		}
		_, err = e.pgConn(t).Exec(ctx, `INSERT INTO `+pgx.Identifier{e.schema, PostgresTable(stream)}.Sanitize()+
			` (uuid, payload, metadata, transaction_id) VALUES ('injected', $1, $2::json, pg_current_xact_id())`, payload, md)
	}
	if err != nil {
		t.Fatalf("error injecting entry: %v", err)
	}
}

func (e *env) amqpChannel(t *testing.T, f func(ch *amqp.Channel) error) error {
	t.Helper()
	conn, err := amqp.Dial(e.url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	return f(ch)
}

// retainGroup is the group whose queue keeps an AMQP channel's messages for
// length (AMQP keeps nothing that no queue holds).
const retainGroup = "retain"

// retain makes a channel keep what is published to it although nothing
// subscribes: a no-op but on AMQP, where it declares a group queue.
func (e *env) retain(t *testing.T, channel string) {
	t.Helper()
	e.declareGroup(t, retainGroup, channel+":*")
}

// declareGroup creates an AMQP group's queues ahead of its first member, so
// that it keeps what is published meanwhile; other backends keep history
// anyway.
func (e *env) declareGroup(t *testing.T, group, pattern string) {
	t.Helper()
	if e.kind != BackendAMQP {
		return
	}
	a := e.backend(t, opts{}).(*AMQP)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.DeclareGroup(ctx, e.layout, group, pattern); err != nil {
		t.Fatal(err)
	}
}

// length returns the number of messages a channel's stream holds (AMQP: the
// queue of retain).
func (e *env) length(t *testing.T, channel string) int64 {
	t.Helper()
	stream := e.layout.KeyPrefix + channel
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	switch e.kind {
	case BackendMemory:
		e.mem.mu.Lock()
		defer e.mem.mu.Unlock()
		return int64(len(e.mem.stream(stream).entries))
	case BackendRedis:
		n, err := e.redisClient(t).XLen(ctx, stream).Result()
		if err != nil {
			t.Fatal(err)
		}
		return n
	case BackendNATS:
		js, done := e.natsStream(t)
		defer done()
		st, err := js.Stream(ctx, NATSStreamName(stream))
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return 0
		} else if err != nil {
			t.Fatal(err)
		}
		return int64(st.CachedInfo().State.Msgs)
	case BackendAMQP:
		var n int
		err := e.amqpChannel(t, func(ch *amqp.Channel) error {
			q, err := ch.QueueDeclarePassive(AMQPGroupQueue(stream, retainGroup, channel+":*"), true, false, false, false, nil)
			n = q.Messages
			return err
		})
		var aerr *amqp.Error
		if errors.As(err, &aerr) && aerr.Code == amqp.NotFound {
			return 0
		} else if err != nil {
			t.Fatal(err)
		}
		return int64(n)
	case BackendPostgres:
		conn := e.pgConn(t)
		table := pgx.Identifier{e.schema, PostgresTable(stream)}.Sanitize()
		var exists bool
		if err := conn.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, table).Scan(&exists); err != nil || !exists {
			return 0
		}
		var n int64
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM `+table).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	return 0
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
		st := e.instance(t, "i1", opts{})
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
			st := e.instance(t, id, opts{})
			chans = append(chans, subscribe(t, newTestSubscriber(t, st, Broadcast()), "store-sync:append:*"))
		}
		pub := newTestPublisher(t, e.instance(t, "p", opts{}))
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
			st := e.instance(t, "m"+string(rune('0'+i)), opts{})
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
		audit := subscribe(t, newTestSubscriber(t, e.instance(t, "audit", opts{}), Competing("audit")), "flow:event:*")

		pub := newTestPublisher(t, e.instance(t, "p", opts{}))
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
		rc := opts{ackWait: 300 * time.Millisecond}
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
		st := e.instance(t, "i", opts{})
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
			st := e.instance(t, []string{"x", "y"}[i], opts{})
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
		st := e.instance(t, "i", opts{})
		e.declareGroup(t, "g", "client:ui:*") // AMQP: the group keeps what is published from now on
		pub := newTestPublisher(t, st)
		old := publish(t, pub, "client:ui:runs")
		type reading struct {
			ch      <-chan *message.Message
			withOld bool
		}
		readings := map[string]reading{
			"broadcast latest": {subscribe(t, newTestSubscriber(t, st, Broadcast()), "client:ui:*"), false},
		}
		if kind == BackendAMQP {
			// AMQP keeps no history: replaying what no queue held is refused.
			for name, d := range map[string]Delivery{
				"broadcast oldest": {Mode: ModeBroadcast, Start: StartOldest},
				"new group oldest": {Mode: ModeCompeting, Group: "g-new", Start: StartOldest},
			} {
				if _, err := newTestSubscriber(t, st, d).Subscribe(context.Background(), "client:ui:*"); !errors.Is(err, ErrNoReplay) {
					t.Errorf("%s: Subscribe returned %v, want ErrNoReplay", name, err)
				}
			}
		} else {
			readings["broadcast oldest"] = reading{subscribe(t, newTestSubscriber(t, st, Delivery{Mode: ModeBroadcast, Start: StartOldest}), "client:ui:*"), true}
		}
		readings["group oldest"] = reading{subscribe(t, newTestSubscriber(t, st, Delivery{Mode: ModeCompeting, Group: "g", Start: StartOldest}), "client:ui:*"), true}
		readings["group latest"] = reading{subscribe(t, newTestSubscriber(t, st, Competing("g2")), "client:ui:*"), false}
		fresh := publish(t, pub, "client:ui:runs")
		for name, r := range readings {
			want := []string{fresh}
			if r.withOld {
				want = []string{old, fresh}
			}
			if got := ids(receive(t, r.ch, len(want))); !slices.Equal(got, want) {
				t.Errorf("%s: got %v, want %v", name, got, want)
			}
		}
		// Nothing more comes: a latest start does not replay what came before.
		for name, r := range readings {
			select {
			case msg := <-r.ch:
				t.Errorf("%s: unexpected message %s", name, msg.UUID)
			case <-time.After(200 * time.Millisecond):
			}
		}
	})
}

func TestNackRedelivers(t *testing.T) {
	forEachBackend(t, func(t *testing.T, kind string) {
		e := newEnv(t, kind)
		st := e.instance(t, "i", opts{})
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
		st := e.instance(t, "i", opts{})
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
		e.retain(t, "store-sync")
		pub := newTestPublisher(t, e.instance(t, "i", opts{}))
		msgs := make([]*message.Message, 1000)
		for i := range msgs {
			msgs[i] = message.NewMessage(watermill.NewUUID(), []byte(`{}`))
		}
		if err := pub.Publish("store-sync:append:s", msgs...); err != nil {
			t.Fatal(err)
		}
		// "MAXLEN ~" trims whole macro nodes (100 entries by default in
		// Redis); NATS (MaxMsgs), AMQP (x-max-length) and Postgres (a
		// delete after every MaxLen/10 rows) keep exactly 50.
		if n := e.length(t, "store-sync"); n < 50 || n > 250 {
			t.Errorf("stream holds %d entries after 1000 appends with MaxLen 50", n)
		}
		if n := e.length(t, "flow"); n != 0 {
			t.Errorf("flow stream holds %d entries", n)
		}
	})
}

// TestGroupRecreated checks that a competing subscription survives the
// loss of its consumer group (a Redis restarted without persistence, a
// consumer or queue deleted by hand): it is re-created at the stream's
// start (AMQP: declared again, empty, since AMQP keeps no history).
func TestGroupRecreated(t *testing.T) {
	forEachBackend(t, func(t *testing.T, kind string) {
		if kind == BackendMemory {
			t.Skip("a Memory group lives in the process and cannot be lost apart from it")
		}
		e := newEnv(t, kind)
		st := e.instance(t, "i", opts{})
		ch := subscribe(t, newTestSubscriber(t, st, Competing("g")), "flow:event:*")
		pub := newTestPublisher(t, st)
		first := publish(t, pub, "flow:event:r1")
		receive(t, ch, 1)
		e.destroyGroup(t, "flow", "g", "flow:event:*")
		// On AMQP, what is published before the queue is back and bound
		// again is lost for the group: the queue is declared, then bound,
		// so publish again until one arrives.
		var again <-chan time.Time
		if kind == BackendAMQP {
			e.waitForQueue(t, AMQPGroupQueue(e.layout.KeyPrefix+"flow", "g", "flow:event:*"))
			tick := time.NewTicker(500 * time.Millisecond)
			defer tick.Stop()
			again = tick.C
		}
		second := map[string]bool{publish(t, pub, "flow:event:r1"): true}
		deadline := time.After(waitFor)
		for {
			select {
			case msg := <-ch:
				msg.Ack()
				if second[msg.UUID] {
					return
				}
				if msg.UUID != first { // the re-created group starts at the stream's start
					t.Fatalf("unexpected message %s", msg.UUID)
				}
			case <-again:
				second[publish(t, pub, "flow:event:r1")] = true
			case <-deadline:
				t.Fatal("no delivery after the consumer group was destroyed")
			}
		}
	})
}

// destroyGroup deletes a consumer group (Delivery.Group with pattern)
// behind the subscribers' back.
func (e *env) destroyGroup(t *testing.T, channel, groupName, pattern string) {
	t.Helper()
	stream := e.layout.KeyPrefix + channel
	group := groupKey(groupName, pattern)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var err error
	switch e.kind {
	case BackendAMQP:
		err = e.amqpChannel(t, func(ch *amqp.Channel) error {
			_, err := ch.QueueDelete(AMQPGroupQueue(stream, groupName, pattern), false, false, false)
			return err
		})
	case BackendRedis:
		err = e.redisClient(t).XGroupDestroy(ctx, stream, group).Err()
	case BackendNATS:
		js, done := e.natsStream(t)
		defer done()
		err = js.DeleteConsumer(ctx, NATSStreamName(stream), NATSStreamName(group))
	case BackendPostgres:
		_, err = e.pgConn(t).Exec(ctx, `DELETE FROM `+pgx.Identifier{e.schema, "watermill_offsets_" + pgTopic(stream)}.Sanitize()+
			` WHERE consumer_group = $1`, group)
	default:
		t.Fatalf("cannot destroy a %s group", e.kind)
	}
	if err != nil {
		t.Fatal(err)
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
	if _, err := New(Config{Backend: "kafka"}, nil); err == nil {
		t.Error("unknown backend accepted")
	}
	for _, b := range []string{BackendRedis, BackendNATS, BackendAMQP, BackendPostgres} {
		if _, err := New(Config{Backend: b}, nil); err == nil {
			t.Errorf("%s without URL accepted", b)
		}
	}
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{Backend: BackendNATS, NATSURL: "nats://127.0.0.1:4222"}, "*stream.NATS"},
		{Config{Backend: BackendAMQP, AMQPURL: "amqp://guest:guest@127.0.0.1:5672/"}, "*stream.AMQP"},
		{Config{Backend: BackendPostgres, PostgresURL: "postgres://postgres@127.0.0.1/x"}, "*stream.Postgres"},
	} {
		cfg, want := c.cfg, c.want
		st, err := New(cfg, nil)
		if err != nil {
			t.Fatalf("New(%+v): %v", cfg, err)
		}
		if got := fmt.Sprintf("%T", st.Backend()); got != want {
			t.Errorf("backend %s is %s, want %s", cfg.Backend, got, want)
		}
		_ = st.Close()
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
		st := e.instance(t, "i", opts{})
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

// TestBrokerUnreachable checks that with the broker down a stream fails
// fast and clearly, and that building publishers and subscribers does not
// need it (as with Redis, a process starts and reports the stream not
// ready).
func TestBrokerUnreachable(t *testing.T) {
	for _, cfg := range []Config{
		{Backend: BackendNATS, NATSURL: "nats://127.0.0.1:1"},
		{Backend: BackendAMQP, AMQPURL: "amqp://guest:guest@127.0.0.1:1/"},
		{Backend: BackendPostgres, PostgresURL: "postgres://postgres@127.0.0.1:1/test?connect_timeout=2"},
	} {
		t.Run(cfg.Backend, func(t *testing.T) {
			t.Parallel()
			st, err := New(cfg, testLogger)
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			start := time.Now()
			if err := st.Ping(ctx); err == nil {
				t.Fatal("Ping succeeded")
			}
			pub, err := st.NewPublisher()
			if err != nil {
				t.Fatalf("NewPublisher needs the broker: %v", err)
			}
			defer pub.Close()
			if err := pub.Publish("client:ui:runs", message.NewMessage("x", nil)); err == nil {
				t.Fatal("Publish succeeded")
			}
			sub, err := st.NewSubscriber(Broadcast())
			if err != nil {
				t.Fatalf("NewSubscriber needs the broker: %v", err)
			}
			defer sub.Close()
			if _, err := sub.Subscribe(ctx, "client:*"); err == nil {
				t.Fatal("Subscribe succeeded")
			}
			if d := time.Since(start); d > 10*time.Second {
				t.Errorf("failing took %v", d)
			}
		})
	}
}

// TestUnackedMessageHoldsBackNoOtherReader checks that a group member
// sitting on an unacked message delays nobody else: another group and a
// broadcast reader of the same stream get what is published meanwhile.
// (On Postgres a reading transaction that held a row lock would hide every
// newer row from every reader until it ended.)
func TestUnackedMessageHoldsBackNoOtherReader(t *testing.T) {
	forEachBackend(t, func(t *testing.T, kind string) {
		e := newEnv(t, kind)
		st := e.instance(t, "i", opts{})
		slow := subscribe(t, newTestSubscriber(t, st, Competing("slow")), "flow:event:*")
		other := subscribe(t, newTestSubscriber(t, st, Competing("other")), "flow:event:*")
		watcher := subscribe(t, newTestSubscriber(t, st, Broadcast()), "flow:event:*")
		pub := newTestPublisher(t, st)
		first := publish(t, pub, "flow:event:r1")
		var held *message.Message
		select {
		case held = <-slow:
		case <-time.After(waitFor):
			t.Fatal("the slow member received nothing")
		}
		second := publish(t, pub, "flow:event:r1")
		for name, ch := range map[string]<-chan *message.Message{"other group": other, "broadcast": watcher} {
			if got := ids(receive(t, ch, 2)); !slices.Equal(got, []string{first, second}) {
				t.Errorf("%s got %v while a member held %s, want %v", name, got, first, []string{first, second})
			}
		}
		held.Ack()
		if got := receive(t, slow, 1); got[0].UUID != second {
			t.Errorf("the slow member got %s after its ack, want %s", got[0].UUID, second)
		}
	})
}
