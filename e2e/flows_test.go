package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/nvent/nvent/internal/domain"
	"github.com/nvent/nvent/internal/handlers"
	"github.com/nvent/nvent/internal/stream"
)

// flowRun is a run as GET /v1/runs/{runId} and the run document hold it.
type flowRun struct {
	RunID      string `json:"runId"`
	FlowName   string `json:"flowName"`
	Status     string `json:"status"`
	StartedAt  string `json:"startedAt"`
	FinishedAt string `json:"finishedAt"`
	LastSeq    int64  `json:"lastSeq"`
	Steps      struct {
		Started, Completed, Failed int
	} `json:"steps"`
}

// parallel runs fn(i) for i in [0, n) on workers goroutines.
func parallel(n, workers int, fn func(i int)) {
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range jobs {
				fn(i)
			}
		})
	}
	for i := range n {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
}

// sumMetric adds up a metric over the instances.
func sumMetric(t *testing.T, procs []*Proc, name, labels string) (sum float64, each []float64) {
	for _, p := range procs {
		v := p.Metric(t, name, labels)
		each = append(each, v)
		sum += v
	}
	return sum, each
}

// listRuns follows the pages of path (a list endpoint of runs) on p.
func listRuns(t *testing.T, p *Proc, path string) []flowRun {
	t.Helper()
	var all []flowRun
	after := ""
	for {
		status, body := p.Do(t, "GET", path+"?limit=1000&after="+after, "")
		var page struct {
			Items []flowRun
			Next  string
		}
		if status != 200 || json.Unmarshal(body, &page) != nil {
			t.Fatalf("GET %s: %d %.300s", path, status, body)
		}
		all = append(all, page.Items...)
		if page.Next == "" {
			return all
		}
		after = page.Next
	}
}

// TestFlowRunsAndTriggersOnTwoInstances starts 1,000 runs through the flows
// API of two instances on one Postgres and one Redis, runs each to its end
// with appends spread over both, and checks every run, from the store at
// once and from the flow-runs wiring's document eventually, and the run
// status messages on client:ui:runs. Meanwhile 50 flow triggers, each
// delivered twice, must start exactly 50 runs.
func TestFlowRunsAndTriggersOnTwoInstances(t *testing.T) {
	env, redisURL, prefix := clusterEnv(t)
	dir := t.TempDir()
	statuses := Tail(t, bin, dir, handlers.RunStatusTopic, env...)
	procs := []*Proc{Serve(t, bin, dir, env...), Serve(t, bin, dir, env...)}
	began := time.Now()

	// 1. 50 triggers, appended on both instances while the runs below are
	// loaded; each is then delivered a second time (its stream message added
	// again to the flow stream, as a redelivery would), possibly to the
	// other instance.
	const triggers = 50
	rc := redis.NewClient(mustRedisOptions(t, redisURL))
	defer rc.Close()
	triggerIDs := make([]string, triggers)
	for i := range triggerIDs {
		triggerIDs[i] = fmt.Sprintf("trig-%02d", i)
	}
	var triggered sync.WaitGroup
	triggered.Go(func() {
		for i, id := range triggerIDs {
			status, body, err := procs[i%2].TryDo("POST", "/v1/streams/triggers:x/events",
				fmt.Sprintf(`{"id":%q,"type":"flow.trigger","flowName":"ingest","data":{"n":%d}}`, id, i))
			var res struct{ Events []domain.Event }
			if err != nil || status != 201 || json.Unmarshal(body, &res) != nil || len(res.Events) != 1 {
				t.Errorf("trigger %d: %d %s %v", i, status, body, err)
				return
			}
			e := res.Events[0]
			data, _ := json.Marshal(map[string]any{"flowName": e.FlowName, "runId": e.RunID, "event": e})
			entry, err := stream.Encode(stream.Message{Type: handlers.TriggerType, Topic: "flow:trigger:ingest", Data: data,
				Timestamp: e.TS, InstanceID: "e2e-redelivery", EventID: e.ID})
			if err == nil {
				err = rc.XAdd(context.Background(), &redis.XAddArgs{Stream: prefix + "flow", Values: map[string]any{"message": string(entry)}}).Err()
			}
			if err != nil {
				t.Errorf("redelivering trigger %d: %v", i, err)
				return
			}
		}
	})

	// 2. 1,000 runs, started on both instances, each followed by two steps
	// and its completion, appended one by one to alternating instances.
	const runs, workers = 1000, 8
	steps := []string{
		`{"type":"step.started","stepName":"reserve"}`, `{"type":"step.completed","stepName":"reserve"}`,
		`{"type":"step.started","stepName":"charge"}`, `{"type":"step.completed","stepName":"charge"}`,
		`{"type":"flow.completed","data":{"ok":true}}`,
	}
	ids := make([]string, runs)
	parallel(runs, workers, func(i int) {
		status, body, err := procs[i%2].TryDo("POST", "/v1/flows/billing/runs", fmt.Sprintf(`{"order":%d}`, i))
		var started struct {
			RunID string
			Event domain.Event
		}
		if err != nil || status != 201 || json.Unmarshal(body, &started) != nil || started.Event.Seq != 1 || started.Event.Type != "flow.start" {
			t.Errorf("start run %d: %d %s %v", i, status, body, err)
			return
		}
		ids[i] = started.RunID
		for j, ev := range steps {
			status, body, err := procs[(i+j+1)%2].TryDo("POST", "/v1/streams/"+domain.FlowSubject(started.RunID)+"/events", ev)
			if err != nil || status != 201 {
				t.Errorf("run %d, append %d: %d %s %v", i, j, status, body, err)
				return
			}
		}
	})
	triggered.Wait()
	if t.Failed() {
		t.FailNow()
	}
	loaded := time.Since(began)

	// 3. Every run reads back exact at once: the store is the truth.
	answers := make([]map[string]any, runs)
	parallel(runs, workers, func(i int) {
		status, body, err := procs[(i+1)%2].TryDo("GET", "/v1/runs/"+ids[i], "")
		var run flowRun
		if err != nil || status != 200 || json.Unmarshal(body, &run) != nil || json.Unmarshal(body, &answers[i]) != nil {
			t.Errorf("GET run %d: %d %s %v", i, status, body, err)
			return
		}
		if run.RunID != ids[i] || run.FlowName != "billing" || run.Status != "completed" || run.LastSeq != 6 ||
			run.Steps.Started != 2 || run.Steps.Completed != 2 || run.Steps.Failed != 0 || run.StartedAt == "" || run.FinishedAt < run.StartedAt {
			t.Errorf("run %d: %s", i, body)
		}
	})
	if t.Failed() {
		t.FailNow()
	}

	// 4. Each trigger delivery was handled once, by one instance or the
	// other, and each trigger started one run.
	Eventually(t, 20*time.Second, func() bool { s, _ := sumMetric(t, procs, wiringMetric, `wiring="triggers"`); return s >= 2*triggers },
		func() string {
			s, each := sumMetric(t, procs, wiringMetric, `wiring="triggers"`)
			return fmt.Sprintf("trigger deliveries handled %v (per instance %v), want %d", s, each, 2*triggers)
		})
	_, perInstance := sumMetric(t, procs, wiringMetric, `wiring="triggers"`)
	t.Logf("trigger deliveries handled per instance: %v", perInstance)
	starts := triggerStarts(t, envValue(env, "NVENT_POSTGRES_URL"), envValue(env, "NVENT_POSTGRES_SCHEMA"))
	if len(starts) != triggers {
		t.Fatalf("%d triggers started runs, want %d: %v", len(starts), triggers, starts)
	}
	for _, id := range triggerIDs {
		if starts[id] != 1 {
			t.Fatalf("trigger %s started %d runs (all: %v)", id, starts[id], starts)
		}
		runID := handlers.TriggerRunID("triggers:x", id)
		status, body := procs[0].Do(t, "GET", "/v1/runs/"+runID, "")
		var run flowRun
		if status != 200 || json.Unmarshal(body, &run) != nil || run.FlowName != "ingest" || run.Status != "running" || run.LastSeq != 1 {
			t.Fatalf("run of trigger %s: %d %s", id, status, body)
		}
	}

	// 5. The flow-runs wiring caught up, each lifecycle event handled by
	// one instance, and every run's document equals what the store says.
	lifecycle := float64(runs*(1+len(steps)) + triggers)
	Eventually(t, 30*time.Second, func() bool { s, _ := sumMetric(t, procs, wiringMetric, `wiring="flow-runs"`); return s >= lifecycle },
		func() string {
			s, each := sumMetric(t, procs, wiringMetric, `wiring="flow-runs"`)
			return fmt.Sprintf("flow events handled %v (per instance %v), want %v", s, each, lifecycle)
		})
	if s, each := sumMetric(t, procs, wiringMetric, `wiring="flow-runs"`); s != lifecycle {
		t.Fatalf("flow events handled %v times in all (per instance %v), want each of %v once", s, each, lifecycle)
	}
	pending := make([]int, runs)
	for i := range pending {
		pending[i] = i
	}
	var last string
	Eventually(t, 20*time.Second, func() bool {
		var still []int
		for _, i := range pending {
			status, body := procs[i%2].Do(t, "GET", "/v1/docs/runs/"+ids[i], "")
			var doc struct{ Data map[string]any }
			if status != 200 || json.Unmarshal(body, &doc) != nil || !reflect.DeepEqual(doc.Data, answers[i]) {
				still = append(still, i)
				last = fmt.Sprintf("run %d: document %d %s, GET /v1/runs %v", i, status, body, answers[i])
			}
		}
		pending = still
		return len(pending) == 0
	}, func() string {
		return fmt.Sprintf("%d run documents differ from their events; the last: %s", len(pending), last)
	})

	// 6. The lists: the flow's runs and all runs, from the documents.
	billing := listRuns(t, procs[1], "/v1/flows/billing/runs")
	got := make([]string, len(billing))
	for i, r := range billing {
		got[i] = r.RunID
	}
	want := slices.Clone(ids)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("GET /v1/flows/billing/runs listed %d runs, want the %d started", len(got), len(want))
	}
	if ingest := listRuns(t, procs[0], "/v1/flows/ingest/runs"); len(ingest) != triggers {
		t.Fatalf("GET /v1/flows/ingest/runs listed %d runs, want %d", len(ingest), triggers)
	}
	if all := listRuns(t, procs[0], "/v1/runs"); len(all) != runs+triggers {
		t.Fatalf("GET /v1/runs listed %d runs, want %d", len(all), runs+triggers)
	}

	// 7. Every status change was published on client:ui:runs: running and
	// completed for each run, running for each triggered one (at least
	// once; copies share an event id).
	wantStatus := map[string]bool{}
	for _, id := range ids {
		wantStatus[id+":running:1"], wantStatus[id+":completed:6"] = true, true
	}
	for _, id := range triggerIDs {
		wantStatus[handlers.TriggerRunID("triggers:x", id)+":running:1"] = true
	}
	seenStatus, copies := map[string]bool{}, 0
	for len(seenStatus) < len(wantStatus) {
		select {
		case m := <-statuses:
			id, _ := m["eventId"].(string)
			if !wantStatus[id] || m["type"] != handlers.RunStatusType {
				t.Fatalf("unexpected status message %v", m)
			}
			if seenStatus[id] {
				copies++
			}
			seenStatus[id] = true
		case <-time.After(10 * time.Second):
			t.Fatalf("%d of %d status changes reached client:ui:runs", len(seenStatus), len(wantStatus))
		}
	}

	_, perInstance = sumMetric(t, procs, wiringMetric, `wiring="flow-runs"`)
	t.Logf("FLOWS %d status messages (%d copies)", len(seenStatus), copies)
	t.Logf("FLOWS %d runs × %d appends loaded in %v; everything checked after %v; flow events handled per instance %v",
		runs, 1+len(steps), loaded.Round(time.Millisecond), time.Since(began).Round(time.Millisecond), perInstance)
}

func mustRedisOptions(t *testing.T, url string) *redis.Options {
	t.Helper()
	opts, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	return opts
}

// triggerStarts counts, from Postgres, the flow.start events whose data
// names a trigger, by trigger id.
func triggerStarts(t *testing.T, pgURL, schema string) map[string]int {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, pgURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, fmt.Sprintf(`SELECT data->>'trigger', count(*) FROM %s.events
		WHERE type = 'flow.start' AND data->>'trigger' IS NOT NULL GROUP BY 1`, pgx.Identifier{schema}.Sanitize()))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for rows.Next() {
		var id string
		var n int
		if err := rows.Scan(&id, &n); err != nil {
			t.Fatal(err)
		}
		out[id] = n
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
