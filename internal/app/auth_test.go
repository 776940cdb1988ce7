package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"

	"github.com/nvent/nvent/internal/app"
	"github.com/nvent/nvent/internal/auth"
	"github.com/nvent/nvent/internal/dashboard"
	"github.com/nvent/nvent/internal/domain"
	"github.com/nvent/nvent/internal/flows"
	"github.com/nvent/nvent/internal/httpapi"
	"github.com/nvent/nvent/internal/live"
	"github.com/nvent/nvent/internal/metrics"
	"github.com/nvent/nvent/internal/storage/memory"
)

const secret = "s3cret-auth-token"

// stack is every route of nvent serve (app.Mount) over a memory store,
// with auth on, on a real HTTP server.
type stack struct {
	t     *testing.T
	url   string
	api   *httpapi.API
	store *memory.Store
}

func newStack(t *testing.T, log *slog.Logger) *stack {
	t.Helper()
	store := memory.New()
	feed := gochannel.NewGoChannel(gochannel.Config{}, watermill.NopLogger{})
	hub := live.NewHub(feed, log)
	ctx, cancel := context.WithCancel(context.Background())
	hubDone := make(chan struct{})
	go func() { defer close(hubDone); _ = hub.Run(ctx) }()
	api := httpapi.New(httpapi.Config{AuthToken: secret}, store, log, nil)
	le := live.NewEndpoints(hub, store, live.Config{}, log, live.Counters{}, live.ScopeByRun(httpapi.RunScope), 0)
	app.Mount(api, metrics.New().Handler(), dashboard.Handler(), flows.New(flows.Config{}, store, log), le)
	srv := httptest.NewServer(api)
	t.Cleanup(func() {
		le.Shutdown()
		srv.CloseClientConnections()
		srv.Close()
		cancel()
		_ = feed.Close()
		<-hubDone
		_ = store.Close()
	})
	return &stack{t: t, url: srv.URL, api: api, store: store}
}

// do sends a request with token (as a bearer header, or in the query when
// inQuery) and returns the status and, for a non-streaming answer, the
// body. A streaming answer (SSE) is cut after its headers.
func (s *stack) do(method, path, body, token string, inQuery bool, header ...string) (int, []byte) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if inQuery && token != "" {
		sep := "?"
		if strings.Contains(path, "?") {
			sep = "&"
		}
		path += sep + "access_token=" + url.QueryEscape(token)
	}
	req, err := http.NewRequestWithContext(ctx, method, s.url+path, strings.NewReader(body))
	if err != nil {
		s.t.Fatal(err)
	}
	if !inQuery && token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.Header.Get("Content-Type") == "text/event-stream" {
		return resp.StatusCode, nil
	}
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func (s *stack) runToken(run string) string {
	s.t.Helper()
	status, body := s.do("POST", "/v1/runs/"+run+"/token", `{"ttlSeconds":600}`, secret, false)
	var tok struct{ Token string }
	if status != 201 || json.Unmarshal(body, &tok) != nil || tok.Token == "" {
		s.t.Fatalf("issuing a run token for %s: %d %s", run, status, body)
	}
	return tok.Token
}

func (s *stack) seed() {
	s.t.Helper()
	for _, run := range []string{"a", "b"} {
		if _, err := s.store.Append(context.Background(), domain.FlowSubject(run), []domain.NewEvent{
			{Type: "flow.start", FlowName: "f", Data: json.RawMessage(`{"secret":"of-` + run + `"}`)}, {Type: "step.started"},
		}, domain.AppendOptions{}); err != nil {
			s.t.Fatal(err)
		}
	}
}

// endpoint is one request the table sends, and the route it exercises.
type endpoint struct {
	route, method, path, body string
	header                    []string
}

// everyEndpoint sends at least one request to every route of the server;
// paths name run b (or no run) wherever they name one.
var everyEndpoint = []endpoint{
	{route: "POST /v1/streams/{subject}/events", method: "POST", path: "/v1/streams/nq:flow:b/events", body: `{"type":"x"}`},
	{route: "POST /v1/streams/{subject}/events", method: "POST", path: "/v1/streams/nq:flow:a/events", body: `{"type":"x"}`},
	{route: "GET /v1/streams/{subject}/events", method: "GET", path: "/v1/streams/nq:flow:b/events"},
	{route: "GET /v1/streams/{subject}/events", method: "GET", path: "/v1/streams/nq:flow:b/events?after=0&limit=1000"},
	{route: "GET /v1/streams/{subject}/events", method: "GET", path: "/v1/streams/nq:flow:a:flow:b/events"},
	{route: "GET /v1/streams/{subject}/events", method: "GET", path: "/v1/streams/store-sync:append:nq:flow:a/events"},
	{route: "POST /v1/runs/{runId}/token", method: "POST", path: "/v1/runs/b/token"},
	{route: "POST /v1/runs/{runId}/token", method: "POST", path: "/v1/runs/a/token"},
	{route: "PUT /v1/docs/{collection}/{id}", method: "PUT", path: "/v1/docs/runs/a", body: `{}`},
	{route: "GET /v1/docs/{collection}/{id}", method: "GET", path: "/v1/docs/runs/a"},
	{route: "DELETE /v1/docs/{collection}/{id}", method: "DELETE", path: "/v1/docs/runs/a"},
	{route: "GET /v1/docs/{collection}", method: "GET", path: "/v1/docs/runs"},
	{route: "PUT /v1/kv/{key}", method: "PUT", path: "/v1/kv/nq:flow:a", body: `{"value":1}`},
	{route: "GET /v1/kv/{key}", method: "GET", path: "/v1/kv/nq:flow:a"},
	{route: "DELETE /v1/kv/{key}", method: "DELETE", path: "/v1/kv/nq:flow:a"},
	{route: "POST /v1/kv/{key}/incr", method: "POST", path: "/v1/kv/nq:flow:a/incr"},
	{route: "/v1/", method: "GET", path: "/v1/nothing"},
	{route: "POST /v1/flows/{flowName}/runs", method: "POST", path: "/v1/flows/f/runs"},
	{route: "GET /v1/runs/{runId}", method: "GET", path: "/v1/runs/b"},
	{route: "GET /v1/runs/{runId}", method: "GET", path: "/v1/runs/a"},
	{route: "GET /v1/runs", method: "GET", path: "/v1/runs"},
	{route: "GET /v1/flows/{flowName}/runs", method: "GET", path: "/v1/flows/f/runs"},
	{route: "GET /v1/subscribe", method: "GET", path: "/v1/subscribe?topic=client:flow:b"},
	{route: "GET /v1/subscribe", method: "GET", path: "/v1/subscribe?topic=client:flow:b&after=0"},
	{route: "GET /v1/subscribe", method: "GET", path: "/v1/subscribe?topic=client:flow:b", header: []string{"Last-Event-ID", "1"}},
	{route: "GET /v1/subscribe", method: "GET", path: "/v1/subscribe?topic=store-sync:append:nq:flow:b"},
	{route: "GET /v1/subscribe", method: "GET", path: "/v1/subscribe?topic=client:flow:*"},
	{route: "GET /v1/subscribe", method: "GET", path: "/v1/subscribe?topic=client:flow:a*"},
	{route: "GET /v1/subscribe", method: "GET", path: "/v1/subscribe?topic=*"},
	{route: "GET /v1/subscribe", method: "GET", path: "/v1/subscribe?topic=store-sync:append:*"},
	{route: "GET /v1/subscribe", method: "GET", path: "/v1/subscribe?topic=client:ui:runs"},
	{route: "GET /v1/ws", method: "GET", path: "/v1/ws"}, // the upgrade itself; subscriptions below
	{route: "GET /healthz", method: "GET", path: "/healthz"},
	{route: "GET /readyz", method: "GET", path: "/readyz"},
	{route: "GET /metrics", method: "GET", path: "/metrics"},
	{route: "/", method: "GET", path: "/"},
}

// open lists the routes that need no token: liveness, readiness, metrics
// and the dashboard's static files (they hold no data).
var open = []string{"GET /healthz", "GET /readyz", "GET /metrics", "/"}

// ownRun lists the requests a run token for run a may make: its own run's
// history and live events. Everything else is refused.
var ownRun = []endpoint{
	{method: "GET", path: "/v1/streams/nq:flow:a/events"},
	{method: "GET", path: "/v1/streams/nq:flow:a/events?after=1&limit=1000&order=desc"},
	{method: "GET", path: "/v1/subscribe?topic=client:flow:a"},
	{method: "GET", path: "/v1/subscribe?topic=client:flow:a&after=1"},
	{method: "GET", path: "/v1/subscribe?topic=store-sync:append:nq:flow:a", header: []string{"Last-Event-ID", "1"}},
}

func TestEveryRouteIsInTheAuthorizationTable(t *testing.T) {
	s := newStack(t, slog.New(slog.DiscardHandler))
	for _, route := range s.api.Routes() {
		if !slices.ContainsFunc(everyEndpoint, func(e endpoint) bool { return e.route == route }) {
			t.Errorf("route %q is not in the authorization table: add requests for it", route)
		}
	}
}

// TestARunTokenReachesOnlyItsRun sends a request to every endpoint with a
// run token for run a (in the header and in the query, as browsers must):
// another run — by subject, topic, pattern, afterSeq or Last-Event-ID — and
// every other endpoint answer 403 forbidden; its own run answers. Without
// a token, or with a wrong, forged or expired one, every /v1 endpoint
// answers 401.
func TestARunTokenReachesOnlyItsRun(t *testing.T) {
	s := newStack(t, slog.New(slog.DiscardHandler))
	s.seed()
	tokA := s.runToken("a")
	forged := tokA[:len(tokA)-3] + "AAA"
	expired, _ := auth.NewRunTokens(secret).Issue("a", -time.Second)
	for _, inQuery := range []bool{false, true} {
		for _, e := range everyEndpoint {
			isOpen := slices.Contains(open, e.route)
			status, body := s.do(e.method, e.path, e.body, tokA, inQuery, e.header...)
			want := http.StatusForbidden
			if isOpen {
				want = http.StatusOK
			}
			if e.route == "GET /v1/ws" {
				// A run token may open a WebSocket (each subscription is
				// checked: see the WebSocket test); a plain GET is then
				// refused as no upgrade.
				want = http.StatusUpgradeRequired
			}
			if status != want {
				t.Errorf("run token for a (query %v): %s %s = %d %s, want %d", inQuery, e.method, e.path, status, body, want)
			}
			if !isOpen {
				for name, tok := range map[string]string{"no token": "", "a wrong token": "wrong", "a forged run token": forged, "an expired run token": expired} {
					if status, body := s.do(e.method, e.path, e.body, tok, inQuery, e.header...); status != http.StatusUnauthorized {
						t.Errorf("%s: %s %s = %d %s, want 401", name, e.method, e.path, status, body)
					}
				}
			}
		}
		for _, e := range ownRun {
			if status, _ := s.do(e.method, e.path, e.body, expired, false, e.header...); status != http.StatusUnauthorized {
				t.Errorf("an expired run token for a, its own run: %s %s = %d, want 401", e.method, e.path, status)
			}
		}
		for _, e := range ownRun {
			if status, body := s.do(e.method, e.path, e.body, tokA, inQuery, e.header...); status != http.StatusOK {
				t.Errorf("run token for a (query %v), its own run: %s %s = %d %s", inQuery, e.method, e.path, status, body)
			}
		}
	}
	// Its own history holds its run's events only.
	if status, body := s.do("GET", "/v1/streams/nq:flow:a/events", "", tokA, false); status != 200 ||
		!bytes.Contains(body, []byte("of-a")) || bytes.Contains(body, []byte("of-b")) {
		t.Fatalf("run a's history: %d %s", status, body)
	}
	// The refused writes wrote nothing.
	if evs, _ := s.store.Read(context.Background(), "nq:flow:a", domain.ReadOptions{}); len(evs) != 2 {
		t.Fatalf("run a holds %d events after refused appends", len(evs))
	}
	if _, err := s.store.GetDocument(context.Background(), "runs", "a"); domain.ErrorCode(err) != domain.CodeNotFound {
		t.Fatalf("a refused save wrote a document: %v", err)
	}
	// The auth token itself may do what the run token may not.
	if status, body := s.do("GET", "/v1/streams/nq:flow:b/events", "", secret, false); status != 200 || !bytes.Contains(body, []byte("of-b")) {
		t.Fatalf("the auth token reading run b: %d %s", status, body)
	}
}

// TestARunTokenSubscribesOnlyToItsRunOverWebSocket: over a WebSocket
// opened with a run token for run a, subscriptions to another run (by
// runId, topic or with an afterSeq) and to patterns are refused with
// forbidden, and subscribing to run a sends run a's history only.
func TestARunTokenSubscribesOnlyToItsRunOverWebSocket(t *testing.T) {
	s := newStack(t, slog.New(slog.DiscardHandler))
	s.seed()
	tokA := s.runToken("a")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, strings.Replace(s.url, "http://", "ws://", 1)+"/v1/ws?access_token="+url.QueryEscape(tokA), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	ask := func(v map[string]any) map[string]any {
		t.Helper()
		if err := wsjson.Write(ctx, c, v); err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := wsjson.Read(ctx, c, &m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	for _, sub := range []map[string]any{
		{"runId": "b"}, {"runId": "b", "afterSeq": 1}, {"topic": "client:flow:b"}, {"topic": "store-sync:append:nq:flow:b", "afterSeq": 0},
		{"topic": "client:flow:*"}, {"topic": "*"}, {"topic": "client:ui:runs"}, {"topic": "client:flow:a*"},
	} {
		sub["type"] = "subscribe"
		if m := ask(sub); m["type"] != "error" || m["code"] != "forbidden" {
			t.Errorf("run token for a, subscribe %v: %v, want a forbidden error", sub, m)
		}
	}
	m := ask(map[string]any{"type": "subscribe", "runId": "a", "afterSeq": 0})
	b, _ := json.Marshal(m)
	if m["type"] != "history" || !bytes.Contains(b, []byte("of-a")) || bytes.Contains(b, []byte("of-b")) {
		t.Fatalf("subscribing to its own run: %s", b)
	}
}

// TestTokensNeverAppearInLogs captures everything nvent logs (debug
// level) while requests carry the auth token, wrong tokens and run tokens
// in headers and in the query, including requests that are refused and
// requests that fail inside: no token string is ever in the output.
func TestTokensNeverAppearInLogs(t *testing.T) {
	var logs bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&lockedWriter{w: &logs}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s := newStack(t, log)
	s.seed()
	tokA := s.runToken("a")
	const wrong = "wrong-token-4f1d9c"
	forged := tokA[:len(tokA)-3] + "AAA"
	for _, inQuery := range []bool{false, true} {
		for _, tok := range []string{wrong, forged, tokA} {
			for _, e := range everyEndpoint {
				s.do(e.method, e.path, e.body, tok, inQuery, e.header...)
			}
		}
	}
	// Requests that fail inside (a closed store: 503, logged with their
	// cause) with the right token.
	_ = s.store.Close()
	for _, inQuery := range []bool{false, true} {
		if status, _ := s.do("GET", "/v1/streams/nq:flow:a/events", "", secret, inQuery); status != 503 {
			t.Fatalf("a read from a closed store: %d", status)
		}
		if status, _ := s.do("GET", "/v1/streams/nq:flow:a/events", "", tokA, inQuery); status != 503 {
			t.Fatalf("a run token's read from a closed store: %d", status)
		}
	}
	out := logs.String()
	if !strings.Contains(out, "request refused") || !strings.Contains(out, "request failed") {
		t.Fatalf("the requests were not logged (so this test shows nothing):\n%s", out)
	}
	for name, tok := range map[string]string{"the auth token": secret, "a wrong token": wrong, "a run token": tokA, "a forged run token": forged} {
		if strings.Contains(out, tok) || strings.Contains(out, url.QueryEscape(tok)) {
			t.Errorf("the logs hold %s", name)
		}
	}
	// Nor any part of a run token that identifies it: its signature.
	if sig := tokA[strings.LastIndexByte(tokA, '.')+1:]; strings.Contains(out, sig) {
		t.Error("the logs hold a run token's signature")
	}
}

// lockedWriter serialises writes from the handlers' goroutines.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
