package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nvent/nvent/internal/testenv"
)

const (
	storeSyncMetric = "nvent_store_sync_messages_total"
	wiringMetric    = "nvent_wiring_messages_total"
)

// appendEvents appends each event body (JSON) to subject through p, in
// order, failing the test on any error.
func appendEvents(t *testing.T, p *Proc, subject string, bodies ...string) {
	t.Helper()
	for _, b := range bodies {
		if status, body := p.Do(t, "POST", "/v1/streams/"+subject+"/events", b); status != 201 {
			t.Fatalf("append to %s on %s: %d %s", subject, p.URL, status, body)
		}
	}
}

// scenario is the coordinator's end-to-end check on a set of instances that
// share a store and a stream. It returns what it appended, for observers.
func scenario(t *testing.T, procs []*Proc) {
	const subjects, perSubject = 4, 25
	a := procs[0]

	// 1. Appends on A reach every instance on store-sync:append:*, each
	// subject in seq order.
	var wg sync.WaitGroup
	for s := range subjects {
		wg.Go(func() {
			for i := range perSubject {
				appendEvents(t, a, fmt.Sprintf("orders:%d", s), fmt.Sprintf(`{"type":"order.updated","data":{"i":%d}}`, i))
			}
		})
	}
	wg.Wait()
	for i, p := range procs {
		Eventually(t, 15*time.Second, func() bool {
			return p.Metric(t, storeSyncMetric, `outcome="append"`) >= subjects*perSubject
		}, func() string {
			return fmt.Sprintf("instance %d received %v of %d appends", i, p.Metric(t, storeSyncMetric, `outcome="append"`), subjects*perSubject)
		})
	}

	// 2. A document changed on A is fresh on the others as soon as they get
	// the store-sync message, although they cached the old version.
	docPut := func(body string) {
		t.Helper()
		status, resp := a.Do(t, "PUT", "/v1/docs/users/u1", body)
		if status != 201 && status != 200 {
			t.Fatalf("save document: %d %s", status, resp)
		}
	}
	docVersion := func(p *Proc) float64 {
		status, body := p.Do(t, "GET", "/v1/docs/users/u1", "")
		if status != 200 {
			return 0
		}
		var d struct{ Version float64 }
		_ = json.Unmarshal(body, &d)
		return d.Version
	}
	docPut(`{"name":"Ann"}`)
	for _, p := range procs[1:] {
		Eventually(t, 10*time.Second, func() bool { return docVersion(p) == 1 }, func() string { return "document v1 not readable" })
		if docVersion(p) != 1 { // a second read comes from the cache
			t.Fatal("cached read lost the document")
		}
	}
	docPut(`{"name":"Bo"}`)
	for i, p := range procs[1:] {
		Eventually(t, 10*time.Second, func() bool { return docVersion(p) == 2 },
			func() string {
				return fmt.Sprintf("instance %d still serves version %v after the change on A", i+1, docVersion(p))
			})
	}

	// 3. Flow events, appended on every instance, are each handled by
	// exactly one member of the flow-runs group.
	const runs, steps = 6, 3
	lifecycle := 0
	for r := range runs {
		p := procs[r%len(procs)]
		subject := fmt.Sprintf("nq:flow:run-%d", r)
		bodies := []string{`{"type":"flow.start","flowName":"billing"}`}
		for s := range steps {
			bodies = append(bodies, fmt.Sprintf(`{"type":"step.started","stepName":"s%d"}`, s),
				`{"type":"log.line","data":"not lifecycle"}`,
				fmt.Sprintf(`{"type":"step.completed","stepName":"s%d"}`, s))
		}
		bodies = append(bodies, `{"type":"flow.completed"}`)
		appendEvents(t, p, subject, bodies...)
		lifecycle += 2 + 2*steps
	}
	handled := func() (sum float64, each []float64) {
		for _, p := range procs {
			v := p.Metric(t, wiringMetric, `wiring="flow-runs"`)
			each = append(each, v)
			sum += v
		}
		return sum, each
	}
	Eventually(t, 20*time.Second, func() bool { s, _ := handled(); return s >= float64(lifecycle) },
		func() string {
			s, e := handled()
			return fmt.Sprintf("flow events handled %v (per instance %v), want %d", s, e, lifecycle)
		})
	if s, each := handled(); s != float64(lifecycle) {
		t.Fatalf("flow events handled %v times in all (per instance %v), want each of %d exactly once", s, each, lifecycle)
	}
	// Every instance converges on each run's final document (another
	// instance's read cache catches up when the store-sync message arrives).
	for r := range runs {
		p := procs[(r+1)%len(procs)]
		var status int
		var body []byte
		complete := func() bool {
			status, body = p.Do(t, "GET", fmt.Sprintf("/v1/docs/runs/run-%d", r), "")
			var d struct {
				Data struct {
					Status   string
					FlowName string
					LastSeq  int
					Steps    struct{ Started, Completed int }
				}
			}
			_ = json.Unmarshal(body, &d)
			return status == 200 && d.Data.Status == "completed" && d.Data.FlowName == "billing" && d.Data.LastSeq == 2+3*steps &&
				d.Data.Steps.Started == steps && d.Data.Steps.Completed == steps
		}
		Eventually(t, 10*time.Second, complete, func() string { return fmt.Sprintf("run-%d document: %d %s", r, status, body) })
	}

	// 4. No instance saw a subject's appends out of order or twice.
	for i, p := range procs {
		if g, d := p.Metric(t, storeSyncMetric, `outcome="gap"`), p.Metric(t, storeSyncMetric, `outcome="duplicate"`); g != 0 || d != 0 {
			t.Errorf("instance %d saw %v gaps and %v duplicates in per-subject seq", i, g, d)
		}
	}
}

// clusterEnv returns the environment of instances sharing a fresh Postgres
// schema and a fresh Redis key prefix.
func clusterEnv(t *testing.T) (env []string, redisURL, prefix string) {
	pgURL, schema := testenv.PostgresSchema(t)
	redisURL = testenv.RedisURL(t)
	prefix = testenv.RedisPrefix(t, redisURL)
	return []string{
		"NVENT_STORE=postgres", "NVENT_POSTGRES_URL=" + pgURL, "NVENT_POSTGRES_SCHEMA=" + schema,
		"NVENT_STREAM=redis", "NVENT_REDIS_URL=" + redisURL, "NVENT_STREAM_PREFIX=" + prefix,
		"NVENT_CLIENT_MESSAGES=true",
	}, redisURL, prefix
}

func TestThreeInstancesOnPostgresAndRedis(t *testing.T) {
	env, redisURL, prefix := clusterEnv(t)
	dir := t.TempDir()
	observer := Tail(t, bin, dir, "store-sync:append:*", env...)
	var procs []*Proc
	for range 3 {
		procs = append(procs, Serve(t, bin, dir, env...))
	}
	scenario(t, procs)

	// An outside observer (nvent tail) saw every append, in seq order per
	// subject, and nothing but appends.
	lastSeq := map[string]float64{}
	seen := 0
	total := 4*25 + 6*(2+3*3)
	for seen < total {
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
			seen++
		case <-time.After(15 * time.Second):
			t.Fatalf("tail saw %d of %d appends", seen, total)
		}
	}

	// A malformed entry written into the stream by someone else does not
	// stop delivery of what comes after it.
	opts, _ := redis.ParseURL(redisURL)
	rc := redis.NewClient(opts)
	defer rc.Close()
	ctx := context.Background()
	for _, fields := range []map[string]any{{"message": "{not json"}, {"garbage": "x"}, {"message": `{"type":"x"}`}} {
		if err := rc.XAdd(ctx, &redis.XAddArgs{Stream: prefix + "store-sync", Values: fields}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	before := procs[1].Metric(t, storeSyncMetric, `outcome="append"`)
	appendEvents(t, procs[0], "after:poison", `{"type":"still.flowing"}`)
	Eventually(t, 10*time.Second, func() bool { return procs[1].Metric(t, storeSyncMetric, `outcome="append"`) > before },
		func() string { return "an append after malformed entries never reached instance B" })
	select {
	case m := <-observer:
		if m["topic"] != "store-sync:append:after:poison" {
			t.Fatalf("after the malformed entries tail printed %v", m)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("tail stopped after the malformed entries")
	}
	if n, err := rc.XLen(ctx, prefix+"poison").Result(); err != nil || n == 0 {
		t.Fatalf("malformed entries were not reported on the poison stream (%d, %v)", n, err)
	}
}

func TestOneInstanceOnTheMemoryStream(t *testing.T) {
	dir := t.TempDir()
	p := Serve(t, bin, dir, "NVENT_STREAM=memory", "NVENT_STORE=sqlite", "NVENT_CLIENT_MESSAGES=true")
	scenario(t, []*Proc{p})
}

func TestDisabledChannelsStayQuiet(t *testing.T) {
	env, _, _ := clusterEnv(t)
	env = append(env, "NVENT_FLOW_EVENTS=false", "NVENT_CLIENT_MESSAGES=false")
	dir := t.TempDir()
	observer := Tail(t, bin, dir, "*", env...)
	p := Serve(t, bin, dir, env...)
	appendEvents(t, p, "nq:flow:quiet", `{"type":"flow.start","flowName":"f"}`, `{"type":"flow.completed"}`)
	appendEvents(t, p, "marker", `{"type":"done"}`)
	for {
		select {
		case m := <-observer:
			topic, _ := m["topic"].(string)
			if !strings.HasPrefix(topic, "store-sync:") {
				t.Fatalf("with flow events and client messages off, the stream carried %s", topic)
			}
			if topic == "store-sync:append:marker" {
				if v := p.Metric(t, wiringMetric, `wiring="flow-runs"`); v != 0 {
					t.Fatalf("flow-runs handled %v messages with flow events off", v)
				}
				return
			}
		case <-time.After(15 * time.Second):
			t.Fatal("the marker append never reached the stream")
		}
	}
}
