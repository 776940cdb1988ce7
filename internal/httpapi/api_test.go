package httpapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/nvent/nvent/internal/domain"
	"github.com/nvent/nvent/internal/httpapi"
	"github.com/nvent/nvent/internal/storage/memory"
)

type client struct {
	t     *testing.T
	srv   *httptest.Server
	store *memory.Store
	token string
}

func newClient(t *testing.T, cfg httpapi.Config, checks ...httpapi.Check) *client {
	t.Helper()
	store := memory.New()
	t.Cleanup(func() { _ = store.Close() })
	api := httpapi.New(cfg, store, slog.New(slog.DiscardHandler), checks)
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	return &client{t: t, srv: srv, store: store}
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) decode(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("response %s is not JSON: %v", r.body, err)
	}
}

// errorCode returns the code of an error response, failing unless the body
// has the documented {"error":{"code","message"}} shape.
func (r response) errorCode(t *testing.T) string {
	t.Helper()
	var b struct {
		Error struct{ Code, Message string }
	}
	r.decode(t, &b)
	if b.Error.Code == "" || b.Error.Message == "" {
		t.Fatalf("error response %s lacks code or message", r.body)
	}
	return b.Error.Code
}

func (c *client) do(method, path string, body io.Reader, header ...string) response {
	c.t.Helper()
	req, err := http.NewRequest(method, c.srv.URL+path, body)
	if err != nil {
		c.t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.srv.Client().Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{resp.StatusCode, resp.Header, b}
}

func (c *client) json(method, path, body string, header ...string) response {
	c.t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	return c.do(method, path, r, header...)
}

func (c *client) events(subject string) []domain.Event {
	c.t.Helper()
	r := c.json("GET", "/v1/streams/"+subject+"/events", "")
	if r.status != 200 {
		c.t.Fatalf("read %s: %d %s", subject, r.status, r.body)
	}
	var b struct{ Events []domain.Event }
	r.decode(c.t, &b)
	return b.Events
}

func TestAppendAndReadRoundTrip(t *testing.T) {
	c := newClient(t, httpapi.Config{})
	r := c.json("POST", "/v1/streams/nq:flow:r1/events", `{"type":"flow.start","data":{"x":1}}`)
	if r.status != 201 {
		t.Fatalf("append: %d %s", r.status, r.body)
	}
	var out struct{ Events []map[string]any }
	r.decode(t, &out)
	e := out.Events[0]
	if e["seq"] != 1.0 || e["subject"] != "nq:flow:r1" || e["runId"] != "r1" || e["type"] != "flow.start" || e["id"] == "" {
		t.Fatalf("stored event = %v", e)
	}
	if ts, _ := e["ts"].(string); len(ts) != len("2006-01-02T15:04:05.000Z") || !strings.HasSuffix(ts, "Z") {
		t.Fatalf("ts %v is not RFC 3339 with milliseconds in UTC", e["ts"])
	}
	r = c.json("POST", "/v1/streams/nq:flow:r1/events", `{"events":[{"type":"a"},{"type":"b","id":"fixed"}],"expectedSeq":1}`)
	if r.status != 201 {
		t.Fatalf("batch append: %d %s", r.status, r.body)
	}
	// The retry of a stored id returns it with 200 and writes nothing.
	r = c.json("POST", "/v1/streams/nq:flow:r1/events", `{"type":"b","id":"fixed"}`)
	if r.status != 200 {
		t.Fatalf("idempotent retry: %d %s", r.status, r.body)
	}
	evs := c.events("nq:flow:r1")
	if len(evs) != 3 || evs[2].ID != "fixed" || evs[2].Seq != 3 {
		t.Fatalf("read back %+v", evs)
	}
	r = c.json("GET", "/v1/streams/nq:flow:r1/events?after=1&types=b,a&order=desc&limit=1", "")
	var page struct{ Events []domain.Event }
	r.decode(t, &page)
	if r.status != 200 || len(page.Events) != 1 || page.Events[0].Seq != 3 {
		t.Fatalf("filtered read: %d %s", r.status, r.body)
	}
}

func TestBadInputGetsTheRightStatusAndWritesNothing(t *testing.T) {
	c := newClient(t, httpapi.Config{MaxBodyBytes: 1 << 20})
	if r := c.json("POST", "/v1/streams/s/events", `{"type":"seed"}`); r.status != 201 {
		t.Fatalf("seed append: %d %s", r.status, r.body)
	}
	big := `{"type":"x","data":"` + strings.Repeat("a", 2<<20) + `"}`
	cases := []struct {
		name, method, path, body string
		header                   []string
		status                   int
		code                     string
	}{
		{"invalid subject", "POST", "/v1/streams/a%20b/events", `{"type":"x"}`, nil, 400, "invalid_input"},
		{"star in subject", "POST", "/v1/streams/s:*/events", `{"type":"x"}`, nil, 400, "invalid_input"},
		{"broken JSON", "POST", "/v1/streams/s/events", `{"type":"x"`, nil, 400, "invalid_input"},
		{"not an object", "POST", "/v1/streams/s/events", `[1,2]`, nil, 400, "invalid_input"},
		{"unknown field", "POST", "/v1/streams/s/events", `{"type":"x","sequence":3}`, nil, 400, "invalid_input"},
		{"empty body", "POST", "/v1/streams/s/events", ``, nil, 400, "invalid_input"},
		{"missing type", "POST", "/v1/streams/s/events", `{"data":1}`, nil, 400, "invalid_input"},
		{"two JSON values", "POST", "/v1/streams/s/events", `{"type":"x"}{"type":"y"}`, nil, 400, "invalid_input"},
		{"2 MB body", "POST", "/v1/streams/s/events", big, nil, 413, "too_large"},
		{"wrong expectedSeq", "POST", "/v1/streams/s/events", `{"events":[{"type":"x"}],"expectedSeq":7}`, nil, 409, "conflict"},
		{"bad after", "GET", "/v1/streams/s/events?after=-1", ``, nil, 400, "invalid_input"},
		{"bad order", "GET", "/v1/streams/s/events?order=up", ``, nil, 400, "invalid_input"},
		{"unknown document", "GET", "/v1/docs/users/nobody", ``, nil, 404, "not_found"},
		{"delete unknown document", "DELETE", "/v1/docs/users/nobody", ``, nil, 404, "not_found"},
		{"document broken JSON", "PUT", "/v1/docs/users/u1", `{"name":`, nil, 400, "invalid_input"},
		{"document bad If-Match", "PUT", "/v1/docs/users/u1", `{}`, []string{"If-Match", "abc"}, 400, "invalid_input"},
		{"document stale If-Match", "PUT", "/v1/docs/users/u1", `{}`, []string{"If-Match", `"4"`}, 409, "conflict"},
		{"kv without value", "PUT", "/v1/kv/k", `{"ttlSeconds":3}`, nil, 400, "invalid_input"},
		{"kv negative ttl", "PUT", "/v1/kv/k", `{"value":1,"ttlSeconds":-3}`, nil, 400, "invalid_input"},
		{"kv bad key", "PUT", "/v1/kv/a*b", `{"value":1}`, nil, 400, "invalid_input"},
		{"kv unknown", "GET", "/v1/kv/missing", ``, nil, 404, "not_found"},
		{"incr bad body", "POST", "/v1/kv/n/incr", `{"by":"one"}`, nil, 400, "invalid_input"},
		{"no such endpoint", "GET", "/v1/nothing", ``, nil, 404, "not_found"},
	}
	for _, tc := range cases {
		r := c.json(tc.method, tc.path, tc.body, tc.header...)
		if r.status != tc.status {
			t.Errorf("%s: status %d (%s), want %d", tc.name, r.status, r.body, tc.status)
			continue
		}
		if got := r.errorCode(t); got != tc.code {
			t.Errorf("%s: code %s, want %s", tc.name, got, tc.code)
		}
	}
	if evs := c.events("s"); len(evs) != 1 {
		t.Fatalf("bad requests wrote events: %+v", evs)
	}
	if r := c.json("GET", "/v1/docs/users", ""); !strings.Contains(string(r.body), `"items":[]`) {
		t.Fatalf("bad requests wrote documents: %s", r.body)
	}
	if r := c.json("GET", "/v1/kv/k", ""); r.status != 404 {
		t.Fatalf("bad requests wrote a key: %d %s", r.status, r.body)
	}
}

func TestDocumentsWithVersions(t *testing.T) {
	c := newClient(t, httpapi.Config{})
	r := c.json("PUT", "/v1/docs/users/u1", `{"name":"Ann"}`, "If-None-Match", "*")
	if r.status != 201 || r.header.Get("ETag") != `"1"` {
		t.Fatalf("create: %d %s etag %q", r.status, r.body, r.header.Get("ETag"))
	}
	if r = c.json("PUT", "/v1/docs/users/u1", `{"name":"Bo"}`, "If-None-Match", "*"); r.status != 409 {
		t.Fatalf("create-only over an existing document: %d", r.status)
	}
	if r = c.json("PUT", "/v1/docs/users/u1", `{"name":"Bo"}`, "If-Match", `"1"`); r.status != 200 || r.header.Get("ETag") != `"2"` {
		t.Fatalf("update: %d %s", r.status, r.body)
	}
	var d domain.Document
	r = c.json("GET", "/v1/docs/users/u1", "")
	r.decode(t, &d)
	if d.Version != 2 || string(d.Data) != `{"name":"Bo"}` {
		t.Fatalf("get = %s", r.body)
	}
	c.json("PUT", "/v1/docs/users/u2", `{}`)
	var page domain.DocumentPage
	r = c.json("GET", "/v1/docs/users?limit=1", "")
	r.decode(t, &page)
	if len(page.Items) != 1 || page.Next != "u1" {
		t.Fatalf("first page = %s", r.body)
	}
	r = c.json("GET", "/v1/docs/users?limit=1&after="+page.Next, "")
	var page2 domain.DocumentPage
	r.decode(t, &page2)
	if len(page2.Items) != 1 || page2.Items[0].ID != "u2" || page2.Next != "" {
		t.Fatalf("second page = %s", r.body)
	}
	if r = c.json("DELETE", "/v1/docs/users/u1", "", "If-Match", `"1"`); r.status != 409 {
		t.Fatalf("delete with a stale version: %d", r.status)
	}
	if r = c.json("DELETE", "/v1/docs/users/u1", "", "If-Match", `"2"`); r.status != 204 {
		t.Fatalf("delete: %d %s", r.status, r.body)
	}
}

func TestKeyValue(t *testing.T) {
	c := newClient(t, httpapi.Config{})
	r := c.json("PUT", "/v1/kv/session:1", `{"value":{"user":"ann"},"ttlSeconds":60}`)
	var e struct {
		Key       string
		Value     json.RawMessage
		ExpiresAt string
	}
	r.decode(t, &e)
	if r.status != 200 || string(e.Value) != `{"user":"ann"}` || e.ExpiresAt == "" {
		t.Fatalf("set: %d %s", r.status, r.body)
	}
	for range 3 {
		r = c.json("POST", "/v1/kv/visits/incr", "")
	}
	r = c.json("POST", "/v1/kv/visits/incr", `{"by":10}`)
	r.decode(t, &e)
	if string(e.Value) != "13" {
		t.Fatalf("incr: %s", r.body)
	}
	if r = c.json("DELETE", "/v1/kv/visits", ""); r.status != 204 {
		t.Fatalf("delete: %d", r.status)
	}
	if r = c.json("GET", "/v1/kv/visits", ""); r.status != 404 {
		t.Fatalf("get after delete: %d", r.status)
	}
}

func TestAuthToken(t *testing.T) {
	c := newClient(t, httpapi.Config{AuthToken: "s3cret"})
	if r := c.json("GET", "/v1/kv/x", ""); r.status != 401 || r.errorCode(t) != "unauthorized" {
		t.Fatalf("no token: %d %s", r.status, r.body)
	}
	if r := c.json("GET", "/v1/kv/x", "", "Authorization", "Bearer wrong"); r.status != 401 {
		t.Fatalf("wrong token: %d", r.status)
	}
	if r := c.json("GET", "/healthz", ""); r.status != 200 {
		t.Fatalf("healthz must not need the token: %d", r.status)
	}
	c.token = "s3cret"
	if r := c.json("GET", "/v1/kv/x", ""); r.status != 404 {
		t.Fatalf("right token: %d %s", r.status, r.body)
	}
	c.token = ""
	if r := c.json("GET", "/v1/kv/x?access_token=s3cret", ""); r.status != 404 {
		t.Fatalf("query token: %d %s", r.status, r.body)
	}
}

func TestReadyzNamesFailingChecks(t *testing.T) {
	var failing atomic.Bool
	failing.Store(true)
	c := newClient(t, httpapi.Config{}, httpapi.Check{Name: "stream", Check: func(context.Context) error {
		if failing.Load() {
			return errors.New("redis: connection refused")
		}
		return nil
	}})
	var body struct {
		Status string
		Checks map[string]string
	}
	r := c.json("GET", "/readyz", "")
	r.decode(t, &body)
	if r.status != 503 || body.Status != "unready" || body.Checks["store"] != "ok" || !strings.Contains(body.Checks["stream"], "connection refused") {
		t.Fatalf("readyz with a failing stream: %d %s", r.status, r.body)
	}
	failing.Store(false)
	r = c.json("GET", "/readyz", "")
	if r.status != 200 {
		t.Fatalf("readyz when all is well: %d %s", r.status, r.body)
	}
}
