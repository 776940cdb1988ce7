package flows_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/nvent/nvent/internal/domain"
	"github.com/nvent/nvent/internal/flows"
	"github.com/nvent/nvent/internal/handlers"
	"github.com/nvent/nvent/internal/storage/memory"
)

type client struct {
	t     *testing.T
	store *memory.Store
	url   string
}

func newClient(t *testing.T, cfg flows.Config) *client {
	t.Helper()
	store := memory.New()
	t.Cleanup(func() { _ = store.Close() })
	mux := http.NewServeMux()
	flows.New(cfg, store, slog.New(slog.DiscardHandler)).Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return &client{t: t, store: store, url: srv.URL}
}

// do sends a request and decodes the JSON answer into v (when not nil).
func (c *client) do(method, path, body string, v any) int {
	c.t.Helper()
	req, err := http.NewRequest(method, c.url+path, strings.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.Header.Get("Content-Type") != "application/json" {
		c.t.Fatalf("%s %s: Content-Type %q", method, path, resp.Header.Get("Content-Type"))
	}
	if v != nil {
		if err := json.Unmarshal(b, v); err != nil {
			c.t.Fatalf("%s %s: %s: %v", method, path, b, err)
		}
	}
	return resp.StatusCode
}

// errorCode sends a request that must fail and returns its error code,
// checking the {"error":{"code","message"}} shape.
func (c *client) errorCode(method, path, body string) (int, string) {
	c.t.Helper()
	var e struct {
		Error struct{ Code, Message string }
	}
	status := c.do(method, path, body, &e)
	if e.Error.Code == "" || e.Error.Message == "" {
		c.t.Fatalf("%s %s: %d without an error code and message", method, path, status)
	}
	return status, e.Error.Code
}

func (c *client) append(subject string, evs ...domain.NewEvent) {
	c.t.Helper()
	if _, err := c.store.Append(context.Background(), subject, evs, domain.AppendOptions{}); err != nil {
		c.t.Fatal(err)
	}
}

type started struct {
	RunID string
	Event domain.Event
}

func TestStartRun(t *testing.T) {
	c := newClient(t, flows.Config{})
	var s started
	if status := c.do("POST", "/v1/flows/billing/runs", `{ "order": 42 }`, &s); status != 201 {
		t.Fatalf("start: %d", status)
	}
	e := s.Event
	if s.RunID == "" || e.Subject != domain.FlowSubject(s.RunID) || e.Seq != 1 || e.Type != "flow.start" ||
		e.FlowName != "billing" || e.RunID != s.RunID || string(e.Data) != `{"order":42}` {
		t.Fatalf("start answered %+v", s)
	}
	stored, err := c.store.Read(context.Background(), e.Subject, domain.ReadOptions{})
	if err != nil || len(stored) != 1 || stored[0].ID != e.ID {
		t.Fatalf("stored %v (%v)", stored, err)
	}

	var empty started
	if status := c.do("POST", "/v1/flows/billing/runs", "", &empty); status != 201 || string(empty.Event.Data) != "null" || empty.RunID == s.RunID {
		t.Fatalf("start without input: %d %+v", status, empty)
	}
}

func TestStartRunRejectsBadInput(t *testing.T) {
	c := newClient(t, flows.Config{MaxBodyBytes: 64})
	for _, tc := range []struct {
		path, body string
		status     int
		code       string
	}{
		{"/v1/flows/billing/runs", `{"a":`, 400, "invalid_input"},
		{"/v1/flows/billing/runs", `{"a":1} {"b":2}`, 400, "invalid_input"},
		{"/v1/flows/bad%20name/runs", `{}`, 400, "invalid_input"},
		{"/v1/flows/bad%2Aname/runs", `{}`, 400, "invalid_input"},
		{"/v1/flows/" + strings.Repeat("f", 257) + "/runs", `{}`, 400, "invalid_input"},
		{"/v1/flows/billing/runs", `"` + strings.Repeat("x", 100) + `"`, 413, "too_large"},
	} {
		if status, code := c.errorCode("POST", tc.path, tc.body); status != tc.status || code != tc.code {
			t.Errorf("POST %s %.20s: %d %s, want %d %s", tc.path, tc.body, status, code, tc.status, tc.code)
		}
	}
	// Bad input changes nothing.
	var page struct{ Items []json.RawMessage }
	if c.do("GET", "/v1/runs", "", &page); len(page.Items) != 0 {
		t.Fatalf("rejected starts left runs: %v", page.Items)
	}
}

func TestGetRunFoldsItsEvents(t *testing.T) {
	c := newClient(t, flows.Config{})
	var s started
	c.do("POST", "/v1/flows/billing/runs", `{}`, &s)
	subject := domain.FlowSubject(s.RunID)

	var run handlers.Run
	if status := c.do("GET", "/v1/runs/"+s.RunID, "", &run); status != 200 || run.Status != "running" || run.LastSeq != 1 ||
		run.FlowName != "billing" || run.StartedAt == nil || !run.StartedAt.Equal(s.Event.TS) || run.FinishedAt != nil {
		t.Fatalf("new run: %d %+v", status, run)
	}
	c.append(subject,
		domain.NewEvent{Type: "step.started", StepName: "a"},
		domain.NewEvent{Type: "step.completed", StepName: "a"},
		domain.NewEvent{Type: "step.started", StepName: "b"},
		domain.NewEvent{Type: "step.failed", StepName: "b"},
		domain.NewEvent{Type: "flow.failed"},
		domain.NewEvent{Type: "log.line"}, // after the last lifecycle event: not part of the run
	)
	if status := c.do("GET", "/v1/runs/"+s.RunID, "", &run); status != 200 || run.Status != "failed" || run.LastSeq != 6 ||
		run.Steps.Started != 2 || run.Steps.Completed != 1 || run.Steps.Failed != 1 || run.FinishedAt == nil {
		t.Fatalf("failed run: %d %+v", status, run)
	}
}

func TestGetRunReadsEveryPage(t *testing.T) {
	c := newClient(t, flows.Config{})
	subject := domain.FlowSubject("long")
	c.append(subject, domain.NewEvent{Type: "flow.start", FlowName: "f"})
	for range 3 {
		batch := make([]domain.NewEvent, 700)
		for i := range batch {
			batch[i] = domain.NewEvent{Type: "step.started"}
		}
		c.append(subject, batch...)
	}
	c.append(subject, domain.NewEvent{Type: "flow.completed"})
	var run handlers.Run
	if status := c.do("GET", "/v1/runs/long", "", &run); status != 200 || run.Steps.Started != 2100 || run.LastSeq != 2102 || run.Status != "completed" {
		t.Fatalf("long run: %d %+v", status, run)
	}
}

func TestGetRunErrors(t *testing.T) {
	c := newClient(t, flows.Config{})
	if status, code := c.errorCode("GET", "/v1/runs/nope", ""); status != 404 || code != "not_found" {
		t.Errorf("unknown run: %d %s", status, code)
	}
	c.append(domain.FlowSubject("quiet"), domain.NewEvent{Type: "log.line"})
	if status, code := c.errorCode("GET", "/v1/runs/quiet", ""); status != 404 || code != "not_found" {
		t.Errorf("a subject without lifecycle events: %d %s", status, code)
	}
	if status, code := c.errorCode("GET", "/v1/runs/a%2Ab", ""); status != 400 || code != "invalid_input" {
		t.Errorf("bad run id: %d %s", status, code)
	}
	if status, code := c.errorCode("GET", "/v1/runs?limit=-1", ""); status != 400 || code != "invalid_input" {
		t.Errorf("bad limit: %d %s", status, code)
	}
	if status, code := c.errorCode("GET", "/v1/flows/f/runs?after=a%2Ab", ""); status != 400 || code != "invalid_input" {
		t.Errorf("bad cursor: %d %s", status, code)
	}
	_ = c.store.Close()
	if status, code := c.errorCode("GET", "/v1/runs/nope", ""); status != 503 || code != "unavailable" {
		t.Errorf("closed store: %d %s", status, code)
	}
}

// saveRuns stores run documents as the flow-runs wiring would: run-0000 …,
// flow "a" for every third, "b" for the others. It returns the ids of each
// flow's runs.
func (c *client) saveRuns(n int) map[string][]string {
	c.t.Helper()
	byFlow := map[string][]string{}
	for i := range n {
		id, flow := fmt.Sprintf("run-%04d", i), "b"
		if i%3 == 0 {
			flow = "a"
		}
		body, _ := json.Marshal(handlers.Run{RunID: id, FlowName: flow, Status: "running", LastSeq: 1})
		if _, err := c.store.SaveDocument(context.Background(), handlers.RunsCollection, id, body, domain.SaveOptions{}); err != nil {
			c.t.Fatal(err)
		}
		byFlow[flow] = append(byFlow[flow], id)
	}
	return byFlow
}

// pages follows next from path (which ends in a query) and returns every
// run id in order and the size of each page.
func (c *client) pages(path string) (ids []string, sizes []int) {
	c.t.Helper()
	after := ""
	for range 1000 {
		var p struct {
			Items []handlers.Run
			Next  *string
		}
		if status := c.do("GET", path+"&after="+after, "", &p); status != 200 {
			c.t.Fatalf("GET %s after %q: %d", path, after, status)
		}
		for _, r := range p.Items {
			ids = append(ids, r.RunID)
		}
		sizes = append(sizes, len(p.Items))
		if p.Next == nil {
			return ids, sizes
		}
		if *p.Next == "" {
			c.t.Fatal("next is present but empty")
		}
		after = *p.Next
	}
	c.t.Fatal("the pages never end")
	return nil, nil
}

func TestListRuns(t *testing.T) {
	c := newClient(t, flows.Config{})
	byFlow := c.saveRuns(10)
	all := slices.Concat(byFlow["a"], byFlow["b"])
	slices.Sort(all)
	ids, sizes := c.pages("/v1/runs?limit=4")
	if !slices.Equal(ids, all) || !slices.Equal(sizes, []int{4, 4, 2}) {
		t.Fatalf("runs %v in pages %v", ids, sizes)
	}
	var p struct {
		Items []json.RawMessage
		Next  *string
	}
	if c.do("GET", "/v1/flows/none/runs", "", &p); p.Items == nil || len(p.Items) != 0 || p.Next != nil {
		t.Fatalf("no runs of a flow: %+v", p)
	}
}

func TestListFlowRunsScansTheCollection(t *testing.T) {
	c := newClient(t, flows.Config{})
	byFlow := c.saveRuns(2500) // more than one page of the store
	ids, sizes := c.pages("/v1/flows/a/runs?limit=300")
	if !slices.Equal(ids, byFlow["a"]) {
		t.Fatalf("flow a: %d runs, want %d", len(ids), len(byFlow["a"]))
	}
	if !slices.Equal(sizes, []int{300, 300, 234}) {
		t.Fatalf("pages %v", sizes)
	}
	// A page that ends exactly with the collection (run-2499 is a's) has
	// no next.
	ids, sizes = c.pages("/v1/flows/a/runs?limit=" + fmt.Sprint(len(byFlow["a"])))
	if !slices.Equal(sizes, []int{len(byFlow["a"])}) || ids[len(ids)-1] != "run-2499" {
		t.Fatalf("flow a in pages %v", sizes)
	}
}

func TestListFlowRunsBoundsTheScan(t *testing.T) {
	c := newClient(t, flows.Config{MaxScan: 1000})
	byFlow := c.saveRuns(2500)
	ids, sizes := c.pages("/v1/flows/a/runs?limit=1000")
	if !slices.Equal(ids, byFlow["a"]) {
		t.Fatalf("flow a: %d runs, want %d", len(ids), len(byFlow["a"]))
	}
	// Each request looked at 1,000 documents at most (a third of them a's).
	if !slices.Equal(sizes, []int{334, 333, 167}) {
		t.Fatalf("pages %v", sizes)
	}
}

// TestFlowsLimits: a run's input is event data (413 past the limit), a
// page of runs is bounded (400 past it), and neither refusal writes.
func TestFlowsLimits(t *testing.T) {
	c := newClient(t, flows.Config{Limits: domain.Limits{MaxEventDataBytes: 20, MaxPageSize: 5, MaxKeyBytes: 8}})
	under, over := `"`+strings.Repeat("x", 18)+`"`, `"`+strings.Repeat("x", 19)+`"`
	if status, code := c.errorCode("POST", "/v1/flows/f/runs", over); status != 413 || code != "too_large" {
		t.Errorf("input of 21 bytes: %d %s, want 413 too_large", status, code)
	}
	if status, code := c.errorCode("POST", "/v1/flows/"+strings.Repeat("f", 9)+"/runs", `{}`); status != 400 || code != "invalid_input" {
		t.Errorf("flow name of 9 bytes: %d %s, want 400 invalid_input", status, code)
	}
	var page struct{ Items []json.RawMessage }
	if c.do("GET", "/v1/runs", "", &page); len(page.Items) != 0 {
		t.Fatalf("refused starts wrote %d runs", len(page.Items))
	}
	if status := c.do("POST", "/v1/flows/"+strings.Repeat("f", 8)+"/runs", under, nil); status != 201 {
		t.Errorf("input of 20 bytes: %d, want 201", status)
	}
	for _, path := range []string{"/v1/runs?limit=5", "/v1/flows/f/runs?limit=5"} {
		if status := c.do("GET", path, "", nil); status != 200 {
			t.Errorf("GET %s: %d, want 200", path, status)
		}
	}
	for _, path := range []string{"/v1/runs?limit=6", "/v1/flows/f/runs?limit=6"} {
		if status, code := c.errorCode("GET", path, ""); status != 400 || code != "invalid_input" {
			t.Errorf("GET %s: %d %s, want 400 invalid_input", path, status, code)
		}
	}
}
