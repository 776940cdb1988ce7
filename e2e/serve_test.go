package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nvent/nvent/internal/testenv"
)

var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "nvent-e2e-")
	if err != nil {
		panic(err)
	}
	bin, err = Build(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

type storedEvent struct {
	ID      string
	Subject string
	Seq     int64
	Type    string
	Data    json.RawMessage
	TS      string
}

func decodeEvents(t *testing.T, body []byte) []storedEvent {
	t.Helper()
	var b struct{ Events []storedEvent }
	if err := json.Unmarshal(body, &b); err != nil {
		t.Fatalf("response %s: %v", body, err)
	}
	return b.Events
}

// roundTrip appends through the API, reads back, and retries the append by
// id: what a new user does first.
func roundTrip(t *testing.T, p *Proc, subject string) {
	t.Helper()
	status, body := p.Do(t, "POST", "/v1/streams/"+subject+"/events", `{"id":"first","type":"order.placed","data":{"total":5}}`)
	if status != 201 {
		t.Fatalf("append: %d %s", status, body)
	}
	status, body = p.Do(t, "GET", "/v1/streams/"+subject+"/events", "")
	evs := decodeEvents(t, body)
	if status != 200 || len(evs) != 1 || evs[0].Seq != 1 || evs[0].ID != "first" || string(evs[0].Data) != `{"total":5}` {
		t.Fatalf("read: %d %s", status, body)
	}
}

func TestServeWithNoConfiguration(t *testing.T) {
	dir := t.TempDir()
	p := Serve(t, bin, dir)
	roundTrip(t, p, "orders:1")
	if _, err := os.Stat(filepath.Join(dir, "data", "nvent.db")); err != nil {
		t.Fatalf("the embedded default did not store under ./data: %v", err)
	}
	if status, body := p.Do(t, "GET", "/readyz", ""); status != 200 {
		t.Fatalf("readyz: %d %s", status, body)
	}
	if err := p.Stop(10e9); err != nil {
		t.Fatal(err)
	}
	// A second process on the same directory sees the event and still
	// treats its id as stored.
	p2 := Serve(t, bin, dir)
	status, body := p2.Do(t, "POST", "/v1/streams/orders:1/events", `{"id":"first","type":"order.placed"}`)
	if evs := decodeEvents(t, body); status != 200 || evs[0].Seq != 1 {
		t.Fatalf("retry after restart: %d %s; want 200 with the stored seq 1", status, body)
	}
	status, body = p2.Do(t, "POST", "/v1/streams/orders:1/events", `{"type":"order.paid"}`)
	if evs := decodeEvents(t, body); status != 201 || evs[0].Seq != 2 {
		t.Fatalf("append after restart: %d %s", status, body)
	}
}

func TestServeOnPostgres(t *testing.T) {
	url, schema := testenv.PostgresSchema(t)
	p := Serve(t, bin, t.TempDir(), "NVENT_STORE=postgres", "NVENT_POSTGRES_URL="+url, "NVENT_POSTGRES_SCHEMA="+schema)
	roundTrip(t, p, "nq:flow:run-1")
	for _, tc := range []struct {
		name, method, path, body string
		status                   int
	}{
		{"invalid subject", "POST", "/v1/streams/bad%20subject/events", `{"type":"x"}`, 400},
		{"star in subject", "POST", "/v1/streams/orders:*/events", `{"type":"x"}`, 400},
		{"broken JSON", "POST", "/v1/streams/nq:flow:run-1/events", `{"type":`, 400},
		{"2 MB body", "POST", "/v1/streams/nq:flow:run-1/events", `{"type":"x","data":"` + strings.Repeat("x", 2<<20) + `"}`, 413},
		{"wrong expectedSeq", "POST", "/v1/streams/nq:flow:run-1/events", `{"events":[{"type":"x"}],"expectedSeq":0}`, 409},
		{"unknown document", "GET", "/v1/docs/users/nobody", "", 404},
	} {
		if status, body := p.Do(t, tc.method, tc.path, tc.body); status != tc.status {
			t.Errorf("%s: %d %s, want %d", tc.name, status, body, tc.status)
		}
	}
	_, body := p.Do(t, "GET", "/v1/streams/nq:flow:run-1/events", "")
	if evs := decodeEvents(t, body); len(evs) != 1 {
		t.Fatalf("bad requests wrote events: %s", body)
	}
}

func TestPostgresDownAnswers503(t *testing.T) {
	p := Serve(t, bin, t.TempDir(), "NVENT_STORE=postgres", "NVENT_POSTGRES_AUTOMIGRATE=false",
		"NVENT_POSTGRES_URL=postgres://postgres@127.0.0.1:1/test?sslmode=disable&connect_timeout=2")
	status, body := p.Do(t, "POST", "/v1/streams/orders:1/events", `{"type":"x"}`)
	if status != 503 || !strings.Contains(string(body), `"unavailable"`) {
		t.Fatalf("append with Postgres down: %d %s; want 503 unavailable", status, body)
	}
	if status, body := p.Do(t, "GET", "/readyz", ""); status != 503 || !strings.Contains(string(body), "store") {
		t.Fatalf("readyz with Postgres down: %d %s", status, body)
	}
}

func TestMigrateCommand(t *testing.T) {
	url, schema := testenv.PostgresSchema(t)
	env := []string{"NVENT_POSTGRES_URL=" + url, "NVENT_POSTGRES_SCHEMA=" + schema}
	dir := t.TempDir()
	if out := Run(t, bin, dir, 0, env, "migrate", "status"); !strings.Contains(out, "pending") || strings.Contains(out, "applied ") {
		t.Fatalf("status of a fresh schema:\n%s", out)
	}
	if out := Run(t, bin, dir, 0, env, "migrate", "up"); !strings.Contains(out, "applied 00001_") {
		t.Fatalf("up:\n%s", out)
	}
	if out := Run(t, bin, dir, 0, env, "migrate", "up"); !strings.Contains(out, "up to date") {
		t.Fatalf("second up:\n%s", out)
	}
	if out := Run(t, bin, dir, 0, env, "migrate", "status"); strings.Contains(out, "pending") {
		t.Fatalf("status after up:\n%s", out)
	}
	if out := Run(t, bin, dir, 0, env, "migrate", "down"); !strings.Contains(out, "rolled back") {
		t.Fatalf("down:\n%s", out)
	}
	Run(t, bin, dir, 0, env, "migrate", "up")
	Run(t, bin, dir, 1, nil, "migrate", "up") // no URL: a clear error
}

func TestAppendCommand(t *testing.T) {
	dir := t.TempDir()
	out := Run(t, bin, dir, 0, nil, "append", "orders:9", "order.placed", `{"total": 3}`)
	var e storedEvent
	if err := json.Unmarshal([]byte(out[:strings.LastIndex(out, "}")+1]), &e); err != nil || e.Seq != 1 || e.Subject != "orders:9" || string(e.Data) != `{"total":3}` {
		t.Fatalf("append printed %s (%v)", out, err)
	}
	Run(t, bin, dir, 0, nil, "append", "orders:9", "order.paid")
	if out := Run(t, bin, dir, 1, nil, "append", "--expected-seq", "0", "orders:9", "x"); !strings.Contains(out, "expected seq 0") {
		t.Fatalf("conflict: %s", out)
	}
	if out := Run(t, bin, dir, 2, nil, "append", "orders:*", "x"); !strings.Contains(out, "'*'") {
		t.Fatalf("bad subject: %s", out)
	}
	if out := Run(t, bin, dir, 2, nil, "append", "orders:9", "x", `{broken`); !strings.Contains(out, "not valid JSON") {
		t.Fatalf("bad JSON: %s", out)
	}
	// What the CLI wrote, a server on the same directory serves.
	p := Serve(t, bin, dir)
	_, body := p.Do(t, "GET", "/v1/streams/orders:9/events", "")
	if evs := decodeEvents(t, body); len(evs) != 2 || evs[1].Type != "order.paid" {
		t.Fatalf("server reads %s", body)
	}
}
