package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/nvent/nvent/internal/testenv"
)

// streamEventIDs returns the eventIds of every entry of a Redis stream.
func streamEventIDs(t *testing.T, redisURL, key string) map[string]bool {
	t.Helper()
	opts, _ := redis.ParseURL(redisURL)
	c := redis.NewClient(opts)
	defer c.Close()
	entries, err := c.XRange(context.Background(), key, "-", "+").Result()
	if err != nil {
		return nil // the server may be on its way back
	}
	ids := map[string]bool{}
	for _, e := range entries {
		var m struct{ EventID string }
		if s, ok := e.Values["message"].(string); ok && json.Unmarshal([]byte(s), &m) == nil {
			ids[m.EventID] = true
		}
	}
	return ids
}

// appendIDs appends n events with known ids to subject through p.
func appendIDs(t *testing.T, p *Proc, subject, prefix string, n int) []string {
	t.Helper()
	var ids []string
	for i := range n {
		id := fmt.Sprintf("%s-%d", prefix, i)
		appendEvents(t, p, subject, fmt.Sprintf(`{"id":%q,"type":"t"}`, id))
		ids = append(ids, id)
	}
	return ids
}

func missing(have map[string]bool, want []string) []string {
	var out []string
	for _, id := range want {
		if !have[id] {
			out = append(out, id)
		}
	}
	return out
}

// TestKillingTheRelayLeaderLosesNothing kills (SIGKILL) the instance that
// relays while both instances take appends: every append that was answered
// 201 — on the killed instance too — reaches the stream, relayed by the
// survivor from the database.
func TestKillingTheRelayLeaderLosesNothing(t *testing.T) {
	env, redisURL, prefix := clusterEnv(t)
	dir := t.TempDir()
	a := Serve(t, bin, dir, env...)
	Eventually(t, 10*time.Second, func() bool { return a.Metric(t, "nvent_relay_leader", "") == 1 },
		func() string { return "the first instance never took the relay lease" })
	b := Serve(t, bin, dir, env...)
	if b.Metric(t, "nvent_relay_leader", "") != 0 {
		t.Fatal("two instances relay at once")
	}

	const writers, each = 4, 80
	var appended atomic.Int64
	var wg sync.WaitGroup
	var acked [writers][]string // ids answered 201
	for w := range writers {
		target := []*Proc{a, b}[w%2]
		wg.Go(func() {
			for i := range each {
				id := fmt.Sprintf("w%d-%d", w, i)
				status, _, err := target.TryDo("POST", fmt.Sprintf("/v1/streams/kill:%d/events", w), fmt.Sprintf(`{"id":%q,"type":"t"}`, id))
				if err != nil {
					return // the instance is gone
				}
				if status != 201 {
					t.Errorf("append %s: %d", id, status)
					return
				}
				acked[w] = append(acked[w], id)
				appended.Add(1)
			}
		})
	}
	Eventually(t, 30*time.Second, func() bool { return appended.Load() >= writers*each/4 },
		func() string { return "appends did not get going" })
	a.Kill()
	wg.Wait()
	Eventually(t, 10*time.Second, func() bool { return b.Metric(t, "nvent_relay_leader", "") == 1 },
		func() string { return "the survivor never took over the relay" })
	var all []string
	for _, w := range acked {
		all = append(all, w...)
	}
	Eventually(t, 20*time.Second, func() bool { return len(missing(streamEventIDs(t, redisURL, prefix+"store-sync"), all)) == 0 },
		func() string {
			m := missing(streamEventIDs(t, redisURL, prefix+"store-sync"), all)
			return fmt.Sprintf("%d of %d acknowledged appends never reached the stream, e.g. %v", len(m), len(all), m[:min(5, len(m))])
		})
}

// TestRedisDownAppendsStillSucceed stops a private Redis: appends go on,
// /readyz says the stream is down, and once Redis is back the relay
// publishes everything committed meanwhile.
func TestRedisDownAppendsStillSucceed(t *testing.T) {
	pgURL, schema := testenv.PostgresSchema(t)
	r := testenv.StartPrivateRedis(t)
	prefix := "nvent:"
	p := Serve(t, bin, t.TempDir(), "NVENT_STORE=postgres", "NVENT_POSTGRES_URL="+pgURL, "NVENT_POSTGRES_SCHEMA="+schema,
		"NVENT_STREAM=redis", "NVENT_REDIS_URL="+r.URL)
	before := appendIDs(t, p, "orders:1", "before", 5)
	Eventually(t, 10*time.Second, func() bool { return len(missing(streamEventIDs(t, r.URL, prefix+"store-sync"), before)) == 0 },
		func() string { return "events never reached Redis while it was up" })

	r.Stop()
	Eventually(t, 10*time.Second, func() bool {
		status, body := p.Do(t, "GET", "/readyz", "")
		return status == 503 && strings.Contains(string(body), `"stream":"failing`)
	}, func() string {
		_, body := p.Do(t, "GET", "/readyz", "")
		return "readyz with Redis down: " + string(body)
	})
	start := time.Now()
	during := appendIDs(t, p, "orders:1", "during", 10)
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("10 appends took %v with Redis down; they must not wait for the stream", took)
	}

	r.Start() // empty: Redis kept nothing
	Eventually(t, 30*time.Second, func() bool { return len(missing(streamEventIDs(t, r.URL, prefix+"store-sync"), during)) == 0 },
		func() string {
			return fmt.Sprintf("after Redis came back, %d events committed while it was down never reached it",
				len(missing(streamEventIDs(t, r.URL, prefix+"store-sync"), during)))
		})
	Eventually(t, 10*time.Second, func() bool { status, _ := p.Do(t, "GET", "/readyz", ""); return status == 200 },
		func() string { return "readyz did not recover with Redis" })
}

// TestAPoisonRowDoesNotStopTheRelay puts a row into the events table that
// no stream topic can carry (written behind nvent's back, bypassing its
// validation): it is set aside on the poison topic and the events after it
// still flow.
func TestAPoisonRowDoesNotStopTheRelay(t *testing.T) {
	env, redisURL, prefix := clusterEnv(t)
	var pgURL, schema string
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "NVENT_POSTGRES_URL="); ok {
			pgURL = v
		}
		if v, ok := strings.CutPrefix(kv, "NVENT_POSTGRES_SCHEMA="); ok {
			schema = v
		}
	}
	p := Serve(t, bin, t.TempDir(), env...)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, pgURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, fmt.Sprintf(`INSERT INTO %s.events (subject, seq, id, type, data, ts) VALUES ('bad*subject', 1, 'poison-1', 'x', 'null', now())`,
		pgx.Identifier{schema}.Sanitize())); err != nil {
		t.Fatal(err)
	}
	after := appendIDs(t, p, "orders:1", "after", 3)
	Eventually(t, 20*time.Second, func() bool { return len(missing(streamEventIDs(t, redisURL, prefix+"store-sync"), after)) == 0 },
		func() string { return "events after a poison row never reached the stream" })
	Eventually(t, 10*time.Second, func() bool { return streamEventIDs(t, redisURL, prefix+"poison")["poison-1"] },
		func() string { return "the poison row was not set aside on the poison topic" })
}
