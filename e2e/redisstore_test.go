package e2e

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nvent/nvent/internal/testenv"
)

// redisStoreEnv returns the environment of instances sharing a store and a
// stream on the shared Redis, both under a fresh key prefix of the test's
// own (deleted when it ends).
func redisStoreEnv(t *testing.T) (env []string, redisURL, prefix string) {
	redisURL = testenv.RedisURL(t)
	prefix = testenv.RedisPrefix(t, redisURL)
	return []string{
		"NVENT_STORE=redis", "NVENT_STREAM=redis", "NVENT_REDIS_URL=" + redisURL,
		"NVENT_STREAM_PREFIX=" + prefix, "NVENT_REDIS_STORE_PREFIX=" + prefix + "store:",
		"NVENT_CLIENT_MESSAGES=true",
	}, redisURL, prefix
}

func TestServeOnTheRedisStore(t *testing.T) {
	env, redisURL, prefix := redisStoreEnv(t)
	dir := t.TempDir()
	p := Serve(t, bin, dir, env...)
	roundTrip(t, p, "nq:flow:run-1")
	for _, tc := range []struct {
		name, method, path, body string
		status                   int
	}{
		{"retry of a stored id", "POST", "/v1/streams/nq:flow:run-1/events", `{"id":"first","type":"order.placed"}`, 200},
		{"invalid subject", "POST", "/v1/streams/bad%20subject/events", `{"type":"x"}`, 400},
		{"broken JSON", "POST", "/v1/streams/nq:flow:run-1/events", `{"type":`, 400},
		{"wrong expectedSeq", "POST", "/v1/streams/nq:flow:run-1/events", `{"events":[{"type":"x"}],"expectedSeq":0}`, 409},
		{"right expectedSeq", "POST", "/v1/streams/nq:flow:run-1/events", `{"events":[{"type":"y"}],"expectedSeq":1}`, 201},
		{"create a document", "PUT", "/v1/docs/users/u1", `{"name":"Ann"}`, 201},
		{"read it", "GET", "/v1/docs/users/u1", "", 200},
		{"unknown document", "GET", "/v1/docs/users/nobody", "", 404},
		{"set a key", "PUT", "/v1/kv/hits", `{"value":41,"ttlSeconds":60}`, 200},
		{"increment it", "POST", "/v1/kv/hits/incr", `{}`, 200},
	} {
		if status, body := p.Do(t, tc.method, tc.path, tc.body); status != tc.status {
			t.Errorf("%s: %d %s, want %d", tc.name, status, body, tc.status)
		}
	}
	if _, body := p.Do(t, "GET", "/v1/kv/hits", ""); !strings.Contains(string(body), `"value":42`) {
		t.Fatalf("key after the increment: %s", body)
	}
	_, body := p.Do(t, "GET", "/v1/streams/nq:flow:run-1/events", "")
	if evs := decodeEvents(t, body); len(evs) != 2 || evs[1].Type != "y" || evs[1].Seq != 2 {
		t.Fatalf("the subject holds %s; want first and y, nothing from the refused appends", body)
	}
	if status, body := p.Do(t, "GET", "/readyz", ""); status != 200 || !strings.Contains(string(body), `"relay":"ok"`) {
		t.Fatalf("readyz: %d %s", status, body)
	}
	if p.Metric(t, "nvent_relay_leader", "") != 1 {
		t.Fatal("the only instance does not relay")
	}

	// A write by another process (the CLI) goes through the outbox too: the
	// server relays it to the stream.
	out := Run(t, bin, dir, 0, env, "append", "cli:1", "from.cli")
	if !strings.Contains(out, `"seq":1`) {
		t.Fatalf("nvent append printed %s", out)
	}
	var cliID string
	if i := strings.Index(out, `"id":"`); i >= 0 {
		cliID = out[i+6:]
		cliID = cliID[:strings.Index(cliID, `"`)]
	}
	Eventually(t, 10*time.Second, func() bool { return streamEventIDs(t, redisURL, prefix+"store-sync")[cliID] },
		func() string { return "the CLI's append never reached the stream" })

	// The data outlives the process: a restarted server still knows the
	// ids it stored.
	if err := p.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	p2 := Serve(t, bin, dir, env...)
	status, body := p2.Do(t, "POST", "/v1/streams/nq:flow:run-1/events", `{"id":"first","type":"order.placed"}`)
	if evs := decodeEvents(t, body); status != 200 || len(evs) != 1 || evs[0].Seq != 1 {
		t.Fatalf("retry after restart: %d %s; want 200 with the stored seq 1", status, body)
	}
}

func TestTwoInstancesOnTheRedisStore(t *testing.T) {
	env, _, _ := redisStoreEnv(t)
	dir := t.TempDir()
	a, b := Serve(t, bin, dir, env...), Serve(t, bin, dir, env...)
	if a.Metric(t, "nvent_relay_leader", "")+b.Metric(t, "nvent_relay_leader", "") > 1 {
		t.Fatal("two instances relay at once")
	}
	scenario(t, []*Proc{a, b})

	// A browser on B follows a run written on A, then on B, in seq order.
	c := openSSE(t, b.URL+"/v1/subscribe?topic=client:flow:r1&after=0", nil)
	if c.status != 200 {
		t.Fatalf("SSE status %d", c.status)
	}
	appendN(t, a, "nq:flow:r1", 5)
	if got := c.seqs(t, 5); !sameInts(got, seqRange(1, 5)) {
		t.Fatalf("B's subscriber got %v from appends on A, want 1..5", got)
	}
	appendN(t, b, "nq:flow:r1", 3)
	if got := c.seqs(t, 3); !sameInts(got, seqRange(6, 8)) {
		t.Fatalf("B's subscriber got %v from appends on B, want 6..8", got)
	}
}

// TestKillingTheRedisStoreRelayLeaderLosesNothing kills (SIGKILL) the
// instance that relays while both take appends: its lease expires, the
// survivor takes over, and every append answered 201 — on the killed
// instance too — reaches the stream from the outbox.
func TestKillingTheRedisStoreRelayLeaderLosesNothing(t *testing.T) {
	env, redisURL, prefix := redisStoreEnv(t)
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
	Eventually(t, 20*time.Second, func() bool { return b.Metric(t, "nvent_relay_leader", "") == 1 },
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
