package e2e

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/nvent/nvent/internal/handlers"
	"github.com/nvent/nvent/internal/stream"
	"github.com/nvent/nvent/internal/testenv"
)

// streamCluster is the environment of instances sharing a fresh Postgres
// schema (the store) and one of the broker stream backends, and a way to
// write a raw message into the store-sync stream behind nvent's back.
type streamCluster struct {
	env    []string
	inject func(t *testing.T, body string, headers map[string]string)
}

// newStreamCluster prepares backend ("nats", "amqp" or "postgres") under a
// stream prefix of its own and removes what the instances created on the
// broker when the test ends (the Postgres stream lives in the store's
// schema, which is dropped).
func newStreamCluster(t *testing.T, backend string) streamCluster {
	pgURL, schema := testenv.PostgresSchema(t)
	prefix := testenv.Name("e2e") + ":"
	c := streamCluster{env: []string{
		"NVENT_STORE=postgres", "NVENT_POSTGRES_URL=" + pgURL, "NVENT_POSTGRES_SCHEMA=" + schema,
		"NVENT_STREAM=" + backend, "NVENT_STREAM_PREFIX=" + prefix, "NVENT_CLIENT_MESSAGES=true",
	}}
	storeSync := prefix + "store-sync"
	ctx := context.Background()
	switch backend {
	case stream.BackendNATS:
		url := testenv.NATSURL(t)
		c.env = append(c.env, "NVENT_NATS_URL="+url)
		conn, err := nats.Connect(url)
		if err != nil {
			t.Fatal(err)
		}
		js, _ := jetstream.New(conn)
		t.Cleanup(func() {
			defer conn.Close()
			names := js.StreamNames(ctx)
			var mine []string
			for name := range names.Name() {
				if strings.HasPrefix(name, stream.NATSStreamName(prefix)) {
					mine = append(mine, name)
				}
			}
			for _, name := range mine {
				if err := js.DeleteStream(ctx, name); err != nil {
					t.Errorf("error deleting jetstream stream %s: %v", name, err)
				}
			}
		})
		c.inject = func(t *testing.T, body string, headers map[string]string) {
			hdr := nats.Header{}
			for k, v := range headers {
				hdr[k] = []string{v}
			}
			if _, err := js.PublishMsg(ctx, &nats.Msg{Subject: stream.NATSStreamName(storeSync), Data: []byte(body), Header: hdr}); err != nil {
				t.Fatal(err)
			}
		}
	case stream.BackendAMQP:
		url := testenv.AMQPURL(t)
		c.env = append(c.env, "NVENT_AMQP_URL="+url)
		t.Cleanup(func() {
			a, err := stream.NewAMQP(stream.AMQPConfig{URL: url}, nil)
			if err != nil {
				t.Error(err)
				return
			}
			defer a.Close()
			ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			layout := stream.Layout{KeyPrefix: prefix}
			// The groups the wirings subscribe with (internal/handlers).
			for group, pattern := range map[string]string{handlers.FlowRunsGroup: "flow:event:*", handlers.TriggersGroup: "flow:trigger:*"} {
				if err := a.DeleteGroup(ctx, layout, group, pattern); err != nil {
					t.Errorf("error deleting group %s: %v", group, err)
				}
			}
			if err := a.DeleteExchanges(ctx, layout, "store-sync", "flow", "client", stream.PoisonChannel); err != nil {
				t.Errorf("error deleting exchanges: %v", err)
			}
		})
		c.inject = func(t *testing.T, body string, headers map[string]string) {
			conn, err := amqp.Dial(url)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			ch, err := conn.Channel()
			if err != nil {
				t.Fatal(err)
			}
			table := amqp.Table{}
			for k, v := range headers {
				table[k] = v
			}
			if err := ch.PublishWithContext(ctx, stream.AMQPExchange(storeSync), "", false, false, amqp.Publishing{Headers: table, Body: []byte(body)}); err != nil {
				t.Fatal(err)
			}
		}
	case stream.BackendPostgres:
		c.inject = func(t *testing.T, body string, headers map[string]string) {
			conn, err := pgx.Connect(ctx, pgURL)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(ctx)
			var payload []byte
			if body != "" {
				payload = []byte(body)
			}
			md, _ := json.Marshal(headers)
			table := pgx.Identifier{schema, stream.PostgresTable(storeSync)}.Sanitize()
			if _, err := conn.Exec(ctx, `INSERT INTO `+table+` (uuid, payload, metadata, transaction_id) VALUES ('raw', $1, $2::json, pg_current_xact_id())`, payload, string(md)); err != nil {
				t.Fatal(err)
			}
		}
	default:
		t.Fatalf("unknown stream backend %q", backend)
	}
	return c
}

// TestThreeInstancesOnEachStreamBackend is TestThreeInstancesOnPostgresAndRedis
// on the other stream backends: three `nvent serve` processes on one
// Postgres store and a NATS JetStream, RabbitMQ or Postgres stream, watched
// by `nvent tail`, then malformed messages written into the stream by
// someone else.
func TestThreeInstancesOnEachStreamBackend(t *testing.T) {
	for _, backend := range []string{stream.BackendNATS, stream.BackendAMQP, stream.BackendPostgres} {
		t.Run(backend, func(t *testing.T) {
			c := newStreamCluster(t, backend)
			dir := t.TempDir()
			observer := Tail(t, bin, dir, "store-sync:append:*", c.env...)
			poison := Tail(t, bin, dir, "poison:*", c.env...)
			var procs []*Proc
			for range 3 {
				procs = append(procs, Serve(t, bin, dir, c.env...))
			}
			scenario(t, procs)
			expectAppendsInOrder(t, observer, 4*25+6*(2+3*3))

			// Malformed messages written by someone else are reported on the
			// poison topic and do not stop delivery.
			c.inject(t, "{not json", nil)
			c.inject(t, "", map[string]string{"garbage": "x"})
			c.inject(t, `{"type":"x"}`, nil)
			before := procs[1].Metric(t, storeSyncMetric, `outcome="append"`)
			appendEvents(t, procs[0], "after:poison", `{"type":"still.flowing"}`)
			Eventually(t, 15*time.Second, func() bool { return procs[1].Metric(t, storeSyncMetric, `outcome="append"`) > before },
				func() string { return "an append after malformed messages never reached instance B" })
			select {
			case m := <-observer:
				if m["topic"] != "store-sync:append:after:poison" {
					t.Fatalf("after the malformed messages tail printed %v", m)
				}
			case <-time.After(15 * time.Second):
				t.Fatal("tail stopped after the malformed messages")
			}
			select {
			case m := <-poison:
				if m["topic"] != "poison:store-sync" || m["type"] != "stream.poison" {
					t.Fatalf("tail of poison:* printed %v", m)
				}
			case <-time.After(15 * time.Second):
				t.Fatal("malformed messages were not reported on poison:store-sync")
			}
		})
	}
}

// expectAppendsInOrder reads total messages from a tail of
// store-sync:append:* and fails unless they are appends in seq order per
// subject.
func expectAppendsInOrder(t *testing.T, observer <-chan map[string]any, total int) {
	t.Helper()
	lastSeq := map[string]float64{}
	for seen := 0; seen < total; seen++ {
		select {
		case m := <-observer:
			topic, _ := m["topic"].(string)
			if !strings.HasPrefix(topic, "store-sync:append:") {
				t.Fatalf("tail of store-sync:append:* printed %v", m)
			}
			ev := m["data"].(map[string]any)["event"].(map[string]any)
			subject, seq := ev["subject"].(string), ev["seq"].(float64)
			if seq != lastSeq[subject]+1 {
				t.Fatalf("tail saw %s seq %v after %v", subject, seq, lastSeq[subject])
			}
			lastSeq[subject] = seq
		case <-time.After(15 * time.Second):
			t.Fatalf("tail saw %d of %d appends", seen, total)
		}
	}
}
