package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nvent/nvent/internal/domain"
	"github.com/nvent/nvent/internal/testenv"
)

// checkReport asserts that rep is complete and well formed: the figures are
// there and consistent, not that they are fast.
func checkReport(t *testing.T, rep Report, scenario string, names ...string) {
	t.Helper()
	if rep.Scenario != scenario {
		t.Fatalf("scenario %q, want %q", rep.Scenario, scenario)
	}
	if rep.Machine.CPUs < 1 || rep.Machine.GoVersion == "" || rep.Config.Concurrency < 1 || rep.Config.DurationSec <= 0 {
		t.Fatalf("incomplete report header: %+v %+v", rep.Config, rep.Machine)
	}
	if len(rep.Results) != len(names) {
		t.Fatalf("%d results, want %v: %+v", len(rep.Results), names, rep.Results)
	}
	for i, r := range rep.Results {
		if r.Name != names[i] {
			t.Errorf("result %d is %q, want %q", i, r.Name, names[i])
		}
		if r.Events <= 0 || r.Received != r.Events || r.Missing != 0 || r.Duplicates != 0 || r.Errors != 0 {
			t.Errorf("%s: events %d, received %d, missing %d, duplicates %d, errors %d (%s)",
				r.Name, r.Events, r.Received, r.Missing, r.Duplicates, r.Errors, r.Note)
		}
		if r.EventsPerSec <= 0 || r.CommittedPerSec <= 0 || r.DurationSec <= 0 {
			t.Errorf("%s: events/s %v, committed/s %v, duration %v", r.Name, r.EventsPerSec, r.CommittedPerSec, r.DurationSec)
		}
		if r.Samples != int(r.Received) {
			t.Errorf("%s: %d latency samples for %d receipts", r.Name, r.Samples, r.Received)
		}
		if !(0 <= r.P50Ms && r.P50Ms <= r.P90Ms && r.P90Ms <= r.P99Ms && r.P99Ms <= r.MaxMs) {
			t.Errorf("%s: percentiles out of order: %v %v %v %v", r.Name, r.P50Ms, r.P90Ms, r.P99Ms, r.MaxMs)
		}
		if r.WriteP50Ms <= 0 || r.WriteP99Ms < r.WriteP50Ms {
			t.Errorf("%s: write times %v/%v", r.Name, r.WriteP50Ms, r.WriteP99Ms)
		}
	}

	// --json: one object with the fields the issue names.
	var buf bytes.Buffer
	if err := WriteJSON(&buf, rep); err != nil {
		t.Fatal(err)
	}
	if strings.Count(strings.TrimSpace(buf.String()), "\n") != 0 {
		t.Fatalf("the JSON report is not one line:\n%s", buf.String())
	}
	var generic struct {
		Scenario string           `json:"scenario"`
		Config   map[string]any   `json:"config"`
		Results  []map[string]any `json:"results"`
	}
	if err := json.Unmarshal(buf.Bytes(), &generic); err != nil {
		t.Fatalf("the JSON report does not parse: %v\n%s", err, buf.String())
	}
	if generic.Scenario != scenario || generic.Config["store"] == nil || len(generic.Results) != len(names) {
		t.Fatalf("JSON report: %s", buf.String())
	}
	for _, r := range generic.Results {
		for _, k := range []string{"name", "events_per_sec", "p50_ms", "p90_ms", "p99_ms", "max_ms", "committed_per_sec"} {
			if _, ok := r[k]; !ok {
				t.Errorf("JSON result %v lacks %q", r["name"], k)
			}
		}
	}

	// The table: a header and one row per result.
	buf.Reset()
	if err := WriteTable(&buf, rep); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	if !strings.Contains(out, "nvent bench "+scenario) || !strings.Contains(out, "p99 ms") {
		t.Fatalf("table:\n%s", out)
	}
	for _, n := range names {
		if !strings.Contains(out, "  "+n+"  ") {
			t.Errorf("the table has no row %q:\n%s", n, out)
		}
	}
}

// TestAppendE2EInMemory is the smoke test: append-e2e on the memory store and
// stream, which live in one process, so it runs in process (see the package
// doc) for about a second.
func TestAppendE2EInMemory(t *testing.T) {
	var logs bytes.Buffer
	rep, err := Run(context.Background(), Config{
		Scenario: ScenarioAppendE2E, Store: "memory", Stream: "memory",
		Duration: time.Second, Concurrency: 4, Subjects: 16, Log: &logs,
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, logs.String())
	}
	if rep.Config.Topology != "in-process" {
		t.Fatalf("topology %q", rep.Config.Topology)
	}
	checkReport(t, rep, ScenarioAppendE2E, ScenarioAppendE2E)
	if r := rep.Results[0]; r.Ratio != nil || r.Note == "" {
		t.Fatalf("without Postgres and Redis there is no baseline, and the result must say so: %+v", r)
	}
}

func TestAppendBatchAndRateInProcess(t *testing.T) {
	t.Run("append-batch on sqlite", func(t *testing.T) {
		rep, err := Run(context.Background(), Config{
			Scenario: ScenarioAppendBatch, Store: "sqlite", Stream: "memory",
			Duration: time.Second, Concurrency: 2, Subjects: 4, Batch: 10,
		})
		if err != nil {
			t.Fatal(err)
		}
		checkReport(t, rep, ScenarioAppendBatch, ScenarioAppendBatch)
		if rep.Results[0].Events%10 != 0 {
			t.Fatalf("batches of 10 made %d events", rep.Results[0].Events)
		}
	})
	t.Run("latency-at-rate on memory", func(t *testing.T) {
		rep, err := Run(context.Background(), Config{
			Scenario: ScenarioLatencyAtRate, Store: "memory", Stream: "memory",
			Duration: time.Second, Concurrency: 2, Rate: 200,
		})
		if err != nil {
			t.Fatal(err)
		}
		checkReport(t, rep, ScenarioLatencyAtRate, ScenarioLatencyAtRate)
		// Paced: 200/s for 1s is about 200 events, never far more.
		if r := rep.Results[0]; r.Events > 210 || r.TargetRate != 200 {
			t.Fatalf("at 200/s for 1s: %d events, target %d", r.Events, r.TargetRate)
		}
	})
}

func TestConfigurationsTheBenchRefuses(t *testing.T) {
	for _, cfg := range []Config{
		{Scenario: "nope"},
		{Scenario: ScenarioAppendE2E, Duration: time.Hour},
		{Scenario: ScenarioAppendE2E, Concurrency: -1},
		{Scenario: ScenarioAppendE2E, Store: "mysql"},
		{Scenario: ScenarioAppendE2E, Stream: "kafka"},
		{Scenario: ScenarioBaseline, Store: "memory"},
		{Scenario: ScenarioFanout, Stream: "memory"},
		{Scenario: ScenarioHTTPAppend, InProcess: true},
		{Scenario: ScenarioFanout, Clients: 10, Runs: 20},
	} {
		_, err := Run(context.Background(), cfg)
		var de *domain.Error
		if !errors.As(err, &de) || de.Code != domain.CodeInvalidInput {
			t.Errorf("%+v: got %v, want invalid input", cfg, err)
		}
	}
}

// TestAppendE2EWithASecondProcess runs the real thing for a second: the
// baseline, then appends relayed by `nvent serve` (built from this tree)
// on the test Postgres and Redis.
func TestAppendE2EWithASecondProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("builds nvent and runs it against Postgres and Redis")
	}
	pg, rd := testenv.PostgresURL(t), testenv.RedisURL(t)
	bin := filepath.Join(t.TempDir(), "nvent")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/nvent/nvent/cmd/app").CombinedOutput(); err != nil {
		t.Fatalf("building nvent: %v\n%s", err, out)
	}
	var logs bytes.Buffer
	rep, err := Run(context.Background(), Config{
		Scenario: ScenarioAppendE2E, Duration: time.Second, Concurrency: 2, Subjects: 8,
		PostgresURL: pg, RedisURL: rd, Executable: bin, Log: &logs,
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, logs.String())
	}
	if rep.Config.Topology != "two-process" || rep.Machine.Postgres == "" || rep.Machine.Redis == "" {
		t.Fatalf("config %+v, machine %+v", rep.Config, rep.Machine)
	}
	checkReport(t, rep, ScenarioAppendE2E, ScenarioBaseline, ScenarioAppendE2E)
	r := rep.Results[1]
	if r.BaselineEventsPerSec == nil || r.Ratio == nil || *r.BaselineEventsPerSec != rep.Results[0].EventsPerSec {
		t.Fatalf("append-e2e must carry the baseline and the ratio: %+v", r)
	}
}
