package bench

// Micro-benchmarks of what every event goes through between the commit and
// the stream consumer, with allocation counts, to tell where the end-to-end
// time goes (BENCHMARKS.md):
//
//	go test -run '^$' -bench . -benchmem ./internal/bench/
//
// The Postgres and Redis ones need the test services (testenv), like every
// other test here.

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strconv"
	"testing"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/nvent/nvent/internal/bus"
	"github.com/nvent/nvent/internal/domain"
	"github.com/nvent/nvent/internal/logging"
	"github.com/nvent/nvent/internal/storage/postgres"
	"github.com/nvent/nvent/internal/stream"
	"github.com/nvent/nvent/internal/testenv"
)

func benchEvent() domain.Event {
	return domain.Event{ID: domain.NewID(), Subject: "bench:7", Seq: 42, Type: defaultEventType, Data: payload(3, 42), TS: domain.Now()}
}

// BenchmarkChangeEncode is what the relay does per row: a bus.Change as a
// bus message.
func BenchmarkChangeEncode(b *testing.B) {
	e := benchEvent()
	c := bus.Change{Kind: bus.KindAppend, ID: e.ID, Event: &e, At: e.TS}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Message(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkChangeDecode is what the coordinator's handler does once per bus
// message.
func BenchmarkChangeDecode(b *testing.B) {
	e := benchEvent()
	msg, err := bus.Change{Kind: bus.KindAppend, ID: e.ID, Event: &e, At: e.TS}.Message()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := bus.Decode(msg); err != nil {
			b.Fatal(err)
		}
	}
}

// The coordinator's own encoding (data + stream message) is measured where
// it lives: BenchmarkStoreSyncMessage in internal/handlers.

// BenchmarkStreamDecode is what every consumer does per stream entry.
func BenchmarkStreamDecode(b *testing.B) {
	e := benchEvent()
	data, _ := json.Marshal(map[string]any{"subject": e.Subject, "event": &e})
	body, err := stream.Encode(stream.Message{Type: "store.append", Topic: "store-sync:append:" + e.Subject,
		Data: data, Timestamp: e.TS, InstanceID: "bench", EventID: e.ID})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := stream.Decode(body); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPatternMatch is a subscriber's filter per message.
func BenchmarkPatternMatch(b *testing.B) {
	for _, tc := range []struct{ pattern, topic string }{
		{"store-sync:append:*", "store-sync:append:bench:7"},
		{"*", "store-sync:append:bench:7"},
		{"store-sync:append:nq:flow:run-1", "store-sync:append:nq:flow:run-1"},
		{"*:flow:*:x", "store-sync:append:nq:flow:0123456789abcdef0123456789abcdef:y"},
	} {
		p, err := stream.CompilePattern(tc.pattern)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(tc.pattern, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				p.Match(tc.topic)
			}
		})
	}
}

// BenchmarkWatermillTraceDisabled is one Trace line of the Watermill logger
// nvent uses, with its level off: what GoChannel and the router pay per
// message for logging nothing.
func BenchmarkWatermillTraceDisabled(b *testing.B) {
	log := logging.Watermill(slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo})))
	fields := watermill.LogFields{"message_uuid": domain.NewID(), "topic": bus.Topic, "handler_name": "store-sync"}
	b.ReportAllocs()
	for b.Loop() {
		log.Trace("Sending msg to subscriber", fields)
	}
}

// BenchmarkBusBatch publishes a relay-sized batch (500 messages) on the bus
// to one handler that only acknowledges (the coordinator is one handler):
// the bus's own cost per event, without the stream.
func BenchmarkBusBatch(b *testing.B) {
	bs, cleanup, err := bus.New(watermill.NopLogger{})
	if err != nil {
		b.Fatal(err)
	}
	defer cleanup()
	for range 1 {
		msgs, err := bs.Subscribe(context.Background(), bus.Topic)
		if err != nil {
			b.Fatal(err)
		}
		go func() {
			for m := range msgs {
				m.Ack()
			}
		}()
	}
	batch := make([]*message.Message, 500)
	for i := range batch {
		e := benchEvent()
		batch[i], _ = bus.Change{Kind: bus.KindAppend, ID: e.ID, Event: &e, At: e.TS}.Message()
	}
	b.ReportAllocs()
	for b.Loop() {
		for _, m := range batch { // a message may be published once
			m.UUID = watermill.NewUUID()
		}
		if err := bs.Publish(bus.Topic, copyBatch(batch)...); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(batch)), "ns/event")
}

func copyBatch(in []*message.Message) []*message.Message {
	out := make([]*message.Message, len(in))
	for i, m := range in {
		out[i] = message.NewMessage(m.UUID, m.Payload)
	}
	return out
}

// BenchmarkPostgresCommit commits single-row inserts from 8 goroutines,
// plain and with a NOTIFY in the transaction (as nvent's events trigger did
// until migration 00005): Postgres holds a cluster-wide lock from a notifying transaction's
// pre-commit until its commit is flushed, so notifying commits cannot share
// a WAL flush.
func BenchmarkPostgresCommit(b *testing.B) {
	url, schema := testenv.PostgresSchema(b)
	ctx := context.Background()
	pool, closePool, err := postgres.NewPool(ctx, postgres.Config{URL: url, Schema: schema, MaxConns: 8})
	if err != nil {
		b.Fatal(err)
	}
	defer closePool()
	if _, err := pool.Exec(ctx, `CREATE TABLE t (id bigserial PRIMARY KEY, v text NOT NULL)`); err != nil {
		b.Fatal(err)
	}
	for _, notify := range []bool{false, true} {
		b.Run("notify="+strconv.FormatBool(notify), func(b *testing.B) {
			b.SetParallelism(4) // 8 goroutines on 2 CPUs
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
						if _, err := tx.Exec(ctx, `INSERT INTO t (v) VALUES ('x')`); err != nil {
							return err
						}
						if notify {
							_, err := tx.Exec(ctx, `SELECT pg_notify('nvent_bench', 'x')`)
							return err
						}
						return nil
					})
					if err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "commits/s")
		})
	}
}

// BenchmarkRedisXADD adds stream messages one round trip each (as the
// coordinator does, one Publish per event) and 100 per pipelined round trip.
func BenchmarkRedisXADD(b *testing.B) {
	url := testenv.RedisURL(b)
	prefix := testenv.RedisPrefix(b, url)
	opts, err := redis.ParseURL(url)
	if err != nil {
		b.Fatal(err)
	}
	c := redis.NewClient(opts)
	defer c.Close()
	e := benchEvent()
	data, _ := json.Marshal(map[string]any{"subject": e.Subject, "event": &e})
	body, _ := stream.Encode(stream.Message{Type: "store.append", Topic: "store-sync:append:" + e.Subject,
		Data: data, Timestamp: e.TS, InstanceID: "bench", EventID: e.ID})
	ctx := context.Background()
	args := func() *redis.XAddArgs {
		return &redis.XAddArgs{Stream: prefix + "xadd", MaxLen: defaultStreamMaxLen, Approx: true, Values: []any{"message", string(body)}}
	}
	b.Run("one-per-round-trip", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := c.XAdd(ctx, args()).Err(); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	})
	b.Run("pipelined-100", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
				for range 100 {
					p.XAdd(ctx, args())
				}
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N*100)/b.Elapsed().Seconds(), "events/s")
	})
}
