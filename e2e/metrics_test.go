package e2e

import (
	"fmt"
	"testing"
	"time"
)

// TestMetricsCountAKnownWorkload scrapes /metrics after a workload whose
// every number is known, and checks the values, not just the names.
func TestMetricsCountAKnownWorkload(t *testing.T) {
	env, _, _ := clusterEnv(t)
	env = append(env, "NVENT_CLIENT_MESSAGES=false")
	p := Serve(t, bin, t.TempDir(), env...)
	for i := range 10 {
		appendEvents(t, p, "m:1", fmt.Sprintf(`{"type":"x","data":%d}`, i))
	}
	appendEvents(t, p, "m:2", `{"events":[{"type":"x"},{"type":"x"},{"type":"x"},{"type":"x"},{"type":"x"}]}`)
	if status, _ := p.Do(t, "POST", "/v1/streams/m:2/events", `{"events":[{"type":"x"}],"expectedSeq":1}`); status != 409 {
		t.Fatalf("conflicting append: %d", status)
	}
	if status, _ := p.Do(t, "POST", "/v1/streams/m*/events", `{"type":"x"}`); status != 400 {
		t.Fatalf("bad subject: %d", status)
	}
	// An idempotent retry writes nothing and counts no append.
	if status, _ := p.Do(t, "POST", "/v1/streams/m:3/events", `{"id":"once","type":"x"}`); status != 201 {
		t.Fatal(status)
	}
	if status, _ := p.Do(t, "POST", "/v1/streams/m:3/events", `{"id":"once","type":"x"}`); status != 200 {
		t.Fatal(status)
	}
	const written = 16
	want := func(name, labels string, v float64) {
		t.Helper()
		Eventually(t, 10*time.Second, func() bool { return p.Metric(t, name, labels) == v },
			func() string { return fmt.Sprintf("%s{%s} = %v, want %v", name, labels, p.Metric(t, name, labels), v) })
	}
	want("nvent_appends_total", `adapter="postgres"`, written)
	want("nvent_append_errors_total", `adapter="postgres",code="conflict"`, 1)
	want("nvent_append_errors_total", `adapter="postgres",code="invalid_input"`, 1)
	want("nvent_append_duration_seconds_count", `adapter="postgres"`, 10+1+1+1+2)
	want("nvent_relay_rows_total", `table="events"`, written)
	want("nvent_stream_publishes_total", `channel="store-sync",result="ok"`, written)
	want("nvent_store_sync_messages_total", `outcome="append"`, written)
	want("nvent_relay_leader", "", 1)
	want("nvent_relay_lag_events", `table="events"`, 0)

	// The cache: once the save's store-sync message has been handled, one
	// read misses and the next hits.
	if status, _ := p.Do(t, "PUT", "/v1/docs/users/u1", `{"n":1}`); status != 201 {
		t.Fatal(status)
	}
	want("nvent_store_sync_messages_total", `outcome="invalidation"`, 1)
	hits, misses := p.Metric(t, "nvent_cache_hits_total", ""), p.Metric(t, "nvent_cache_misses_total", "")
	p.Do(t, "GET", "/v1/docs/users/u1", "")
	p.Do(t, "GET", "/v1/docs/users/u1", "")
	if h, m := p.Metric(t, "nvent_cache_hits_total", "")-hits, p.Metric(t, "nvent_cache_misses_total", "")-misses; h != 1 || m != 1 {
		t.Fatalf("two reads made %v hits and %v misses, want 1 and 1", h, m)
	}
	want("nvent_live_connections", `kind="sse"`, 0)
	want("nvent_poison_messages_total", "", 0)
}
