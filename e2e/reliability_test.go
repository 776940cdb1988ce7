package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/nvent/nvent/internal/testenv"
)

// loader appends events with ids of its own to subjects spread over the
// live instances, retrying an append whose instance died on another one:
// the id makes the retry idempotent.
type loader struct {
	targets  func() []*Proc
	subjects int
	sent     atomic.Int64
	failures atomic.Int64
}

func (l *loader) run(t *testing.T, writers, total int) {
	var wg sync.WaitGroup
	per := total / writers
	for w := range writers {
		wg.Go(func() {
			for i := range per {
				subject := fmt.Sprintf("load:%d", (w*per+i)%l.subjects)
				body := fmt.Sprintf(`{"id":"w%d-%d","type":"load","data":{"i":%d}}`, w, i, i)
				for attempt := 0; ; attempt++ {
					ts := l.targets()
					p := ts[(w+attempt)%len(ts)]
					status, resp, err := p.TryDo("POST", "/v1/streams/"+subject+"/events", body)
					if err == nil && (status == 201 || status == 200) {
						break
					}
					l.failures.Add(1)
					if attempt > 200 {
						t.Errorf("append w%d-%d failed 200 times: %d %s %v", w, i, status, resp, err)
						return
					}
				}
				l.sent.Add(1)
			}
		})
	}
	wg.Wait()
}

// committed reads every event of the load from Postgres: the truth the
// stream is checked against.
func committed(t *testing.T, pgURL, schema string) map[string]struct {
	subject string
	seq     int64
} {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, pgURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, fmt.Sprintf(`SELECT id, subject, seq FROM %s.events WHERE subject LIKE 'load:%%'`, pgx.Identifier{schema}.Sanitize()))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]struct {
		subject string
		seq     int64
	}{}
	for rows.Next() {
		var id, subject string
		var seq int64
		if err := rows.Scan(&id, &subject, &seq); err != nil {
			t.Fatal(err)
		}
		out[id] = struct {
			subject string
			seq     int64
		}{subject, seq}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// consumer keeps what `nvent tail store-sync:append:*` prints: the first
// copy of each event (duplicates are counted and dropped by id) and whether
// each subject's first copies came in seq order.
type consumer struct {
	mu         sync.Mutex
	seen       map[string]bool
	lastSeq    map[string]int64
	duplicates int
	disorder   []string
	lastAt     time.Time
}

func consume(msgs <-chan map[string]any) *consumer {
	c := &consumer{seen: map[string]bool{}, lastSeq: map[string]int64{}}
	go func() {
		for m := range msgs {
			data, _ := m["data"].(map[string]any)
			ev, _ := data["event"].(map[string]any)
			id, _ := ev["id"].(string)
			subject, _ := ev["subject"].(string)
			seq, _ := ev["seq"].(float64)
			c.mu.Lock()
			c.lastAt = time.Now()
			if c.seen[id] {
				c.duplicates++
			} else {
				c.seen[id] = true
				if int64(seq) != c.lastSeq[subject]+1 {
					c.disorder = append(c.disorder, fmt.Sprintf("%s seq %v after %d", subject, seq, c.lastSeq[subject]))
				}
				c.lastSeq[subject] = int64(seq)
			}
			c.mu.Unlock()
		}
	}()
	return c
}

func (c *consumer) missing(truth map[string]struct {
	subject string
	seq     int64
}) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for id := range truth {
		if !c.seen[id] {
			out = append(out, id)
		}
	}
	return out
}

// TestReliabilityKillTheRelayLeader is the kill -9 test: two
// instances, 20,000 events appended over HTTP across 200 subjects, the
// instance holding the relay lease killed with SIGKILL at random moments
// three times and restarted. A consumer on store-sync:append:* must then
// hold every committed event, in per-subject order.
func TestReliabilityKillTheRelayLeader(t *testing.T) {
	if testing.Short() {
		t.Skip("the 20,000-event reliability test is not short")
	}
	const total, subjects, kills = 20_000, 200, 3
	env, _, _ := clusterEnv(t)
	pgURL, schema := envValue(env, "NVENT_POSTGRES_URL"), envValue(env, "NVENT_POSTGRES_SCHEMA")
	dir := t.TempDir()
	c := consume(Tail(t, bin, dir, "store-sync:append:*", env...))

	var mu sync.Mutex
	procs := []*Proc{Serve(t, bin, dir, env...), Serve(t, bin, dir, env...)}
	live := func() []*Proc {
		mu.Lock()
		defer mu.Unlock()
		return append([]*Proc(nil), procs...)
	}
	l := &loader{targets: live, subjects: subjects}
	start := time.Now()
	loaded := make(chan struct{})
	go func() { defer close(loaded); l.run(t, 8, total) }()

	for k := range kills {
		// A random moment within the load.
		at := int64(total/(kills+1)*(k+1)) + rand.Int64N(total/(kills+2))
		Eventually(t, 120*time.Second, func() bool { return l.sent.Load() >= min(at, total-1) },
			func() string { return fmt.Sprintf("the load stalled at %d appends", l.sent.Load()) })
		var leader int = -1
		Eventually(t, 15*time.Second, func() bool {
			for i, p := range live() {
				if p.Metric(t, "nvent_relay_leader", "") == 1 {
					leader = i
					return true
				}
			}
			return false
		}, func() string { return "no instance holds the relay lease" })
		mu.Lock()
		victim := procs[leader]
		mu.Unlock()
		victim.Kill()
		t.Logf("kill %d: SIGKILL to the relay leader after %d appends", k+1, l.sent.Load())
		restarted := Serve(t, bin, dir, env...)
		mu.Lock()
		procs[leader] = restarted
		mu.Unlock()
	}
	<-loaded
	loadTook := time.Since(start)
	truth := committed(t, pgURL, schema)
	if len(truth) != total {
		t.Fatalf("the store holds %d of the %d events the loader got acknowledged", len(truth), total)
	}
	caughtUp := time.Now()
	Eventually(t, 60*time.Second, func() bool { return len(c.missing(truth)) == 0 },
		func() string {
			return fmt.Sprintf("%d committed events never reached the consumer", len(c.missing(truth)))
		})
	catchUp := time.Since(caughtUp)
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.disorder) > 0 {
		t.Fatalf("per-subject order broken %d times, e.g. %v", len(c.disorder), c.disorder[:min(3, len(c.disorder))])
	}
	t.Logf("RELIABILITY kill -9: events=%d subjects=%d kills=%d missing=0 duplicates_seen=%d retried_appends=%d load=%v catch_up_after_load=%v",
		total, subjects, kills, c.duplicates, l.failures.Load(), loadTook.Round(time.Millisecond), catchUp.Round(time.Millisecond))
}

// TestReliabilityRedisRestart stops a private Redis for 10 s during load and
// starts it again: nothing committed is missing for a consumer that stays
// subscribed throughout. The Redis keeps what it acknowledged (AOF, fsync
// always), as the README advises: one that keeps nothing loses, on a
// restart, the entries its consumers had not read yet, which the relay
// counted as delivered (consumers that follow seq then replay the gap from
// the store; `nvent tail` does not).
func TestReliabilityRedisRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("the Redis restart test takes over 10 s")
	}
	const total, subjects = 5_000, 50
	pgURL, schema := testenv.PostgresSchema(t)
	r := testenv.StartPrivateRedis(t, testenv.RedisKeepsAcknowledgedWrites...)
	env := []string{"NVENT_STORE=postgres", "NVENT_POSTGRES_URL=" + pgURL, "NVENT_POSTGRES_SCHEMA=" + schema,
		"NVENT_STREAM=redis", "NVENT_REDIS_URL=" + r.URL}
	dir := t.TempDir()
	c := consume(Tail(t, bin, dir, "store-sync:append:*", env...))
	p := Serve(t, bin, dir, env...)
	l := &loader{targets: func() []*Proc { return []*Proc{p} }, subjects: subjects}
	loaded := make(chan struct{})
	go func() { defer close(loaded); l.run(t, 4, total) }()
	Eventually(t, 60*time.Second, func() bool { return l.sent.Load() >= total/4 }, func() string { return "the load stalled" })
	r.Stop()
	stoppedAt := l.sent.Load()
	Eventually(t, 10*time.Second, func() bool { status, _ := p.Do(t, "GET", "/readyz", ""); return status == 503 },
		func() string { return "readyz did not notice Redis was down" })
	// Ten seconds of load with Redis down; appends keep succeeding.
	down := time.After(10 * time.Second)
	<-down
	duringOutage := l.sent.Load() - stoppedAt
	r.Start()
	restartedAt := time.Now()
	<-loaded
	truth := committed(t, pgURL, schema)
	if len(truth) != total {
		t.Fatalf("the store holds %d of %d events", len(truth), total)
	}
	Eventually(t, 60*time.Second, func() bool { return len(c.missing(truth)) == 0 },
		func() string {
			return fmt.Sprintf("%d committed events never reached the consumer", len(c.missing(truth)))
		})
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.disorder) > 0 {
		t.Fatalf("per-subject order broken %d times, e.g. %v", len(c.disorder), c.disorder[:min(3, len(c.disorder))])
	}
	t.Logf("RELIABILITY redis restart: events=%d appended_while_down=%d missing=0 duplicates_seen=%d caught_up_after_restart=%v",
		total, duringOutage, c.duplicates, time.Since(restartedAt).Round(time.Millisecond))
}

func envValue(env []string, name string) string {
	for _, kv := range env {
		if len(kv) > len(name) && kv[:len(name)+1] == name+"=" {
			return kv[len(name)+1:]
		}
	}
	return ""
}
