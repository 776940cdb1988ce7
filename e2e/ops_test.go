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

	"github.com/nvent/nvent/internal/testenv"
)

// readiness is the body of /readyz.
type readiness struct {
	Status string
	Checks map[string]string
}

// readyz asks p's /readyz and decodes the answer.
func readyz(t *testing.T, p *Proc) (int, readiness, string) {
	t.Helper()
	alive(t, p)
	status, body, err := p.TryDo("GET", "/readyz", "")
	if err != nil {
		t.Fatalf("GET /readyz: %v", err)
	}
	var r readiness
	if err := json.Unmarshal(body, &r); err != nil {
		t.Fatalf("/readyz answered %d %s: %v", status, body, err)
	}
	return status, r, string(body)
}

// alive fails the test, with its logs, when p has exited.
func alive(t *testing.T, p *Proc) {
	t.Helper()
	select {
	case <-p.done:
		t.Fatalf("nvent exited (%v)\n%s", p.err, p.Logs())
	default:
	}
}

// checkState is "ok", "failing" (any "failing: …") or what the check said.
func checkState(r readiness, name string) string {
	v, ok := r.Checks[name]
	switch {
	case !ok:
		return "absent"
	case strings.HasPrefix(v, "failing"):
		return "failing"
	}
	return v
}

// waitReadiness polls /readyz until it answers status with the store and
// stream checks in the given states.
func waitReadiness(t *testing.T, p *Proc, within time.Duration, what string, status int, store, stream string) {
	t.Helper()
	var last string
	Eventually(t, within, func() bool {
		s, r, body := readyz(t, p)
		last = fmt.Sprintf("%d %s", s, body)
		want := "ready"
		if status != 200 {
			want = "unready"
		}
		return s == status && r.Status == want && checkState(r, "store") == store && checkState(r, "stream") == stream
	}, func() string {
		return fmt.Sprintf("%s: /readyz never answered %d with store %s and stream %s; last: %s", what, status, store, stream, last)
	})
}

// TestReadyzFollowsPostgresAndRedis runs one instance on a Postgres and a
// Redis of the test's own and takes each away in turn: /readyz names the
// failing dependency, appends go on without Redis and fail fast (503,
// nothing written) without Postgres, and everything recovers when they
// return.
func TestReadyzFollowsPostgresAndRedis(t *testing.T) {
	pg := testenv.StartPrivatePostgres(t)
	r := testenv.StartPrivateRedis(t)
	p := Serve(t, bin, t.TempDir(), "NVENT_STORE=postgres", "NVENT_POSTGRES_URL="+pg.URL,
		"NVENT_STREAM=redis", "NVENT_REDIS_URL="+r.URL)

	waitReadiness(t, p, 10*time.Second, "at start", 200, "ok", "ok")
	appendIDs(t, p, "ops:1", "up", 3)

	// Redis down: unready, naming the stream; appends still commit.
	r.Stop()
	waitReadiness(t, p, 10*time.Second, "Redis stopped", 503, "ok", "failing")
	start := time.Now()
	appendIDs(t, p, "ops:1", "redis-down", 5)
	t.Logf("5 appends with Redis down: %v", time.Since(start).Round(time.Millisecond))

	r.Start()
	waitReadiness(t, p, 20*time.Second, "Redis started again", 200, "ok", "ok")

	// Postgres down: unready, naming the store; an append fails fast with
	// 503 unavailable.
	pg.Stop()
	waitReadiness(t, p, 10*time.Second, "Postgres stopped", 503, "failing", "ok")
	alive(t, p)
	start = time.Now()
	status, body, err := p.TryDo("POST", "/v1/streams/ops:1/events", `{"id":"pg-down","type":"t"}`)
	took := time.Since(start)
	if err != nil {
		t.Fatalf("append with Postgres down: no answer after %v: %v", took, err)
	}
	var e struct {
		Error struct{ Code, Message string }
	}
	_ = json.Unmarshal(body, &e)
	if status != 503 || e.Error.Code != "unavailable" {
		t.Fatalf("append with Postgres down: %d %s, want 503 unavailable", status, body)
	}
	if took > 2*time.Second {
		t.Fatalf("append with Postgres down took %v to fail; it must fail fast", took)
	}
	t.Logf("append with Postgres down: 503 unavailable in %v", took.Round(time.Millisecond))

	// Postgres back: ready again, the pool reconnects, appends succeed and
	// the relay publishes them.
	pg.Start()
	waitReadiness(t, p, 30*time.Second, "Postgres started again", 200, "ok", "ok")
	after := appendIDs(t, p, "ops:1", "pg-back", 5)

	ctx := context.Background()
	conn, err := pgx.Connect(ctx, pg.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM public.events WHERE id = 'pg-down'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("the append answered 503 with Postgres down wrote %d events", n)
	}
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM public.events WHERE subject = 'ops:1'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 3+5+5 {
		t.Fatalf("the store holds %d events of ops:1, want the 13 answered 201", n)
	}
	Eventually(t, 20*time.Second, func() bool { return len(missing(streamEventIDs(t, r.URL, "nvent:store-sync"), after)) == 0 },
		func() string {
			return fmt.Sprintf("appends after Postgres came back never reached the stream: %v\n%s",
				missing(streamEventIDs(t, r.URL, "nvent:store-sync"), after), p.Logs())
		})
}

// TestSIGTERMUnderLoadLosesNoAcceptedAppend stops an instance with SIGTERM
// while 8 writers append and an SSE client follows: it exits 0 within its
// shutdown timeout, ends the SSE stream itself, every append it answered 201
// is in the store, and once a new instance runs every stored event reaches
// a consumer of the stream.
func TestSIGTERMUnderLoadLosesNoAcceptedAppend(t *testing.T) {
	const shutdownTimeout, margin = 10 * time.Second, 2 * time.Second
	const writers, subjects, before = 8, 64, 400
	env, _, _ := clusterEnv(t)
	env = append(env, fmt.Sprintf("NVENT_SHUTDOWN_TIMEOUT=%v", shutdownTimeout))
	pgURL, schema := envValue(env, "NVENT_POSTGRES_URL"), envValue(env, "NVENT_POSTGRES_SCHEMA")
	dir := t.TempDir()
	c := consume(Tail(t, bin, dir, "store-sync:append:*", env...))
	p := Serve(t, bin, dir, env...)

	// One SSE client, reading everything until the stream ends.
	sse := openSSE(t, p.URL+"/v1/subscribe?topic=store-sync:append:*", nil)
	if sse.status != 200 {
		t.Fatalf("SSE subscribe: %d", sse.status)
	}
	var sseData atomic.Int64
	sseEnded := make(chan sseEvent, 1) // the last event before the stream ended
	go func() {
		var last sseEvent
		for ev := range sse.events {
			if ev.event == "" {
				sseData.Add(1)
			}
			last = ev
		}
		sseEnded <- last
	}()

	var (
		stopping   atomic.Bool
		accepted   atomic.Int64
		mu         sync.Mutex
		acked      []string
		unexpected []string
		wg         sync.WaitGroup
	)
	for w := range writers {
		wg.Go(func() {
			for i := 0; ; i++ {
				id := fmt.Sprintf("w%d-%d", w, i)
				subject := fmt.Sprintf("load:%d", (w*31+i)%subjects)
				status, body, err := p.TryDo("POST", "/v1/streams/"+subject+"/events", fmt.Sprintf(`{"id":%q,"type":"load","data":{"i":%d}}`, id, i))
				if err != nil {
					if !stopping.Load() {
						mu.Lock()
						unexpected = append(unexpected, fmt.Sprintf("%s before SIGTERM: %v", id, err))
						mu.Unlock()
					}
					return // the server stopped taking requests
				}
				if status != 201 {
					mu.Lock()
					unexpected = append(unexpected, fmt.Sprintf("%s (SIGTERM sent: %v): %d %s", id, stopping.Load(), status, body))
					mu.Unlock()
					return
				}
				mu.Lock()
				acked = append(acked, id)
				mu.Unlock()
				accepted.Add(1)
			}
		})
	}
	Eventually(t, 60*time.Second, func() bool { return accepted.Load() >= before && sseData.Load() > 0 },
		func() string {
			return fmt.Sprintf("%d appends accepted, %d reached the SSE client", accepted.Load(), sseData.Load())
		})
	select {
	case last := <-sseEnded:
		t.Fatalf("the SSE stream ended before the SIGTERM: %+v", last)
	default:
	}

	stopping.Store(true)
	sent := time.Now()
	stopErr := p.Stop(shutdownTimeout + 5*time.Second) // SIGTERM, then wait
	exitTook := time.Since(sent)
	wg.Wait()
	if stopErr != nil {
		t.Errorf("SIGTERM under load: %v after %v\n%s", stopErr, exitTook, p.Logs())
	}
	if exitTook > shutdownTimeout+margin {
		t.Errorf("exit took %v after SIGTERM, beyond the shutdown timeout %v (+%v)", exitTook, shutdownTimeout, margin)
	}
	mu.Lock()
	if len(unexpected) > 0 {
		t.Errorf("%d appends answered other than 201 or failed before the SIGTERM, e.g. %v", len(unexpected), unexpected[:min(5, len(unexpected))])
	}
	ackedIDs := append([]string(nil), acked...)
	mu.Unlock()

	// The server ended the SSE stream itself, with its shutdown notice.
	var last sseEvent
	select {
	case last = <-sseEnded:
	case <-time.After(5 * time.Second):
		t.Fatalf("the SSE stream was still open 5s after the process exited")
	}
	var notice struct{ Code, Message string }
	_ = json.Unmarshal([]byte(last.data), &notice)
	if last.event != "error" || notice.Code != "unavailable" || !strings.Contains(notice.Message, "shutting down") {
		t.Errorf("the SSE stream ended without the server's shutdown notice (cut by the exit?); last event: %+v", last)
	}

	// Every append answered 201 is in the store.
	truth := committed(t, pgURL, schema)
	var lost []string
	for _, id := range ackedIDs {
		if _, ok := truth[id]; !ok {
			lost = append(lost, id)
		}
	}
	if len(lost) > 0 {
		t.Fatalf("%d of %d appends answered 201 are not in the store, e.g. %v", len(lost), len(ackedIDs), lost[:min(5, len(lost))])
	}
	notYet := len(c.missing(truth))

	// A new instance on the same schema resumes the relay from its
	// checkpoint: every stored event reaches the consumer.
	p2 := Serve(t, bin, dir, env...)
	Eventually(t, 30*time.Second, func() bool { return len(c.missing(truth)) == 0 },
		func() string {
			m := c.missing(truth)
			return fmt.Sprintf("%d of %d stored events never reached the consumer, e.g. %v\n%s", len(m), len(truth), m[:min(5, len(m))], p2.Logs())
		})
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.disorder) > 0 {
		t.Fatalf("per-subject order broken %d times, e.g. %v", len(c.disorder), c.disorder[:min(3, len(c.disorder))])
	}
	t.Logf("OPS sigterm: accepted=%d stored=%d exit=%v sse_events=%d sse_end=%q missing=0 not_yet_at_consumer_at_exit=%d duplicates_seen=%d",
		len(ackedIDs), len(truth), exitTook.Round(time.Millisecond), sseData.Load(), last.event, notYet, c.duplicates)
}
