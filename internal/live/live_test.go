package live_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"

	"github.com/nvent/nvent/internal/live"
	"github.com/nvent/nvent/internal/storage/memory"
	"github.com/nvent/nvent/internal/stream"
)

// server is the live endpoints over a hub fed by an in-process channel,
// on a real HTTP server.
type server struct {
	url  string
	feed *gochannel.GoChannel
	open atomic.Int64 // connections the endpoints hold now
}

func newServer(t *testing.T, cfg live.Config, maxConnections int) *server {
	t.Helper()
	feed := gochannel.NewGoChannel(gochannel.Config{OutputChannelBuffer: 1024}, watermill.NopLogger{})
	log := slog.New(slog.DiscardHandler)
	hub := live.NewHub(feed, log)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = hub.Run(ctx) }()
	store := memory.New()
	s := &server{feed: feed}
	e := live.NewEndpoints(hub, store, cfg, log, live.Counters{Connections: func(_ string, d int) { s.open.Add(int64(d)) }}, nil, maxConnections)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/subscribe", e.SSE)
	mux.HandleFunc("GET /v1/ws", e.WS)
	srv := httptest.NewServer(mux)
	s.url = srv.URL
	t.Cleanup(func() {
		e.Shutdown()
		srv.CloseClientConnections()
		srv.Close()
		cancel()
		_ = feed.Close()
		<-done
		_ = store.Close()
	})
	return s
}

// publish puts a message on topic as a stream subscriber would deliver
// it; ts is its timestamp metadata.
func (s *server) publish(t *testing.T, topic, id, ts string) {
	t.Helper()
	msg := message.NewMessage(id, []byte(`{"n":1}`))
	msg.Metadata.Set(stream.MetadataTopic, topic)
	msg.Metadata.Set(stream.MetadataType, "test")
	msg.Metadata.Set(stream.MetadataTimestamp, ts)
	if err := s.feed.Publish("*", msg); err != nil {
		t.Fatal(err)
	}
}

const now = "2026-01-02T03:04:05.000Z"

// ws is a WebSocket client that reads on its own goroutine.
type ws struct {
	c    *websocket.Conn
	msgs chan map[string]any
}

func (s *server) dial(t testing.TB) (*ws, error) {
	w, err := s.dialRaw()
	if err == nil {
		t.Cleanup(func() { w.c.CloseNow() })
	}
	return w, err
}

// dialRaw is dial for a caller that closes the connection itself.
func (s *server) dialRaw() (*ws, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, strings.Replace(s.url, "http://", "ws://", 1)+"/v1/ws", nil)
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("status %d: %w", resp.StatusCode, err)
		}
		return nil, err
	}
	w := &ws{c: c, msgs: make(chan map[string]any, 1024)}
	go func() {
		defer close(w.msgs)
		for {
			var m map[string]any
			if err := wsjson.Read(context.Background(), c, &m); err != nil {
				return
			}
			w.msgs <- m
		}
	}()
	return w, nil
}

func (w *ws) send(t *testing.T, v any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := wsjson.Write(ctx, w.c, v); err != nil {
		t.Fatal(err)
	}
}

// next returns the next message, failing after a deadline.
func (w *ws) next(t *testing.T) map[string]any {
	t.Helper()
	select {
	case m, ok := <-w.msgs:
		if !ok {
			t.Fatal("the connection closed")
		}
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no message within 10s")
	}
	return nil
}

func (w *ws) subscribe(t *testing.T, topic string) map[string]any {
	t.Helper()
	w.send(t, map[string]any{"type": "subscribe", "topic": topic})
	return w.next(t)
}

// sse opens /v1/subscribe?topic=…: the response, whose body the caller
// reads (and the test closes).
func (s *server) sse(t *testing.T, topic string) *http.Response {
	t.Helper()
	resp, err := http.Get(s.url + "/v1/subscribe?topic=" + url.QueryEscape(topic))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func errorCode(t *testing.T, resp *http.Response) string {
	t.Helper()
	b, _ := io.ReadAll(resp.Body)
	var e struct {
		Error struct{ Code, Message string }
	}
	if err := json.Unmarshal(b, &e); err != nil || e.Error.Message == "" {
		t.Fatalf("%d %s is not the documented error shape", resp.StatusCode, b)
	}
	return e.Error.Code
}

// eventually waits for cond, failing after a deadline.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10s", what)
		}
		<-tick.C
	}
}

func TestSubscriptionsPerConnectionLimit(t *testing.T) {
	s := newServer(t, live.Config{MaxSubscriptions: 3}, 0)
	w, err := s.dial(t)
	if err != nil {
		t.Fatal(err)
	}
	for _, topic := range []string{"t:1", "t:2", "t:3"} {
		if m := w.subscribe(t, topic); m["type"] != "subscribed" {
			t.Fatalf("subscription %s, within the limit: %v", topic, m)
		}
	}
	if m := w.subscribe(t, "t:4"); m["type"] != "error" || m["code"] != "too_large" {
		t.Fatalf("one subscription over the limit: %v", m)
	}
	// The refused subscription holds nothing; the connection goes on.
	s.publish(t, "t:4", "e4", now)
	s.publish(t, "t:1", "e1", now)
	if m := w.next(t); m["type"] != "event" || m["topic"] != "t:1" {
		t.Fatalf("first delivery after a refused subscription: %v", m)
	}
	// Unsubscribing makes room again.
	w.send(t, map[string]any{"type": "unsubscribe", "topic": "t:2"})
	if m := w.next(t); m["type"] != "unsubscribed" {
		t.Fatalf("unsubscribe: %v", m)
	}
	if m := w.subscribe(t, "t:4"); m["type"] != "subscribed" {
		t.Fatalf("a subscription after unsubscribing: %v", m)
	}
}

func TestPatternLimits(t *testing.T) {
	s := newServer(t, live.Config{MaxPatternBytes: 32, MaxPatternStars: 2}, 0)
	w, err := s.dial(t)
	if err != nil {
		t.Fatal(err)
	}
	under := "p:" + strings.Repeat("x", 30)
	for _, tc := range []struct {
		topic, want, code string
	}{
		{under, "subscribed", ""},
		{under + "x", "error", "invalid_input"},
		{"a*b*", "subscribed", ""},
		{"a*b*c*", "error", "invalid_input"},
		{"***", "error", "invalid_input"},
	} {
		if m := w.subscribe(t, tc.topic); m["type"] != tc.want || (tc.code != "" && m["code"] != tc.code) {
			t.Errorf("WebSocket subscribe %q (%d bytes): %v, want %s %s", tc.topic, len(tc.topic), m, tc.want, tc.code)
		}
		resp := s.sse(t, tc.topic)
		if tc.want == "subscribed" && resp.StatusCode != 200 {
			t.Errorf("SSE %q: %d, want 200", tc.topic, resp.StatusCode)
		}
		if tc.want == "error" && (resp.StatusCode != 400 || errorCode(t, resp) != tc.code) {
			t.Errorf("SSE %q: %d, want 400 %s", tc.topic, resp.StatusCode, tc.code)
		}
		resp.Body.Close()
	}
	// Neither refused pattern was registered: only the accepted ones
	// deliver.
	s.publish(t, "a:x:b*c*", "e1", now)
	s.publish(t, "p:"+strings.Repeat("x", 31), "e2", now)
	s.publish(t, "aXb", "e3", now)
	if m := w.next(t); m["eventId"] != "e3" {
		t.Fatalf("delivered %v; want only e3 (a*b*)", m)
	}
}

func TestConnectionsPerInstanceLimit(t *testing.T) {
	s := newServer(t, live.Config{}, 2)
	a := s.sse(t, "t:1")
	if _, err := s.dial(t); a.StatusCode != 200 || err != nil {
		t.Fatalf("two connections within the limit: SSE %d, WebSocket %v", a.StatusCode, err)
	}
	eventually(t, "two connections held", func() bool { return s.open.Load() == 2 })
	if c := s.sse(t, "t:1"); c.StatusCode != 503 || errorCode(t, c) != "unavailable" {
		t.Fatalf("an SSE connection over the limit: %d", c.StatusCode)
	}
	if _, err := s.dial(t); err == nil || !strings.Contains(err.Error(), "status 503") {
		t.Fatalf("a WebSocket over the limit: %v", err)
	}
	a.Body.Close()
	eventually(t, "the closed connection released", func() bool { return s.open.Load() == 1 })
	if c := s.sse(t, "t:1"); c.StatusCode != 200 {
		t.Fatalf("a connection once another closed: %d", c.StatusCode)
	}
}

// TestUndeliverableMessagesAreSkipped: a message on the stream without an
// event id or with a zero timestamp (anyone who can write to the stream can
// put one there) cannot be sent on; it is skipped and the connections that
// follow its topic live on.
func TestUndeliverableMessagesAreSkipped(t *testing.T) {
	s := newServer(t, live.Config{}, 0)
	w, err := s.dial(t)
	if err != nil {
		t.Fatal(err)
	}
	if m := w.subscribe(t, "t:*"); m["type"] != "subscribed" {
		t.Fatal(m)
	}
	sse := s.sse(t, "t:*")
	s.publish(t, "t:1", "zero", "0001-01-01T00:00:00.000Z")
	s.publish(t, "t:1", "", now)
	s.publish(t, "t:1", "good", now)
	if m := w.next(t); m["eventId"] != "good" {
		t.Fatalf("WebSocket got %v first; want the good message", m)
	}
	buf := make([]byte, 4096)
	var got strings.Builder
	for !strings.Contains(got.String(), `"eventId":"good"`) {
		n, err := sse.Body.Read(buf)
		if err != nil {
			t.Fatalf("the SSE connection ended: %v (read %q)", err, got.String())
		}
		got.Write(buf[:n])
	}
	if strings.Contains(got.String(), "event: error") || strings.Contains(got.String(), `"zero"`) {
		t.Fatalf("SSE stream %q", got.String())
	}
}

// TestAbusiveConnectionsKeepMemoryBounded opens many WebSocket connections
// that each flood subscriptions (to the limit and past it) and send
// malformed and oversized messages, and measures the heap: bounded per
// connection while they are open, and back near where it started once
// they are gone.
func TestAbusiveConnectionsKeepMemoryBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("opens hundreds of connections")
	}
	// Each connection costs both sides' buffers, its goroutines' data, its
	// queue (256 slots) and its subscriptions: about 80 KiB, measured.
	const conns, perConnBudget = 200, 128 << 10
	s := newServer(t, live.Config{MaxSubscriptions: 50}, 0)
	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	base := heap()
	clients := make([]*ws, 0, conns)
	defer func() {
		for _, w := range clients {
			w.c.CloseNow()
		}
	}()
	for i := range conns {
		w, err := s.dialRaw()
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		for j := range 60 {
			w.send(t, map[string]any{"type": "subscribe", "topic": fmt.Sprintf("flood:%d:%d:*", i, j)})
		}
		_ = w.c.Write(context.Background(), websocket.MessageText, []byte(`{"type":`))
		clients = append(clients, w)
	}
	for i, w := range clients {
		refused := 0
		for range 61 { // 50 subscribed, 10 refused, 1 malformed
			m := w.next(t)
			if m["type"] == "error" {
				refused++
			}
		}
		if refused != 11 {
			t.Fatalf("connection %d: %d refusals, want 11", i, refused)
		}
	}
	held := heap()
	grown := int64(held) - int64(base)
	t.Logf("heap: %d KiB before, %d KiB with %d abusive connections (%d B each, server and client sides)", base>>10, held>>10, conns, grown/conns)
	if grown > conns*perConnBudget {
		t.Fatalf("the heap grew by %d KiB for %d connections; the budget is %d KiB each", grown>>10, conns, perConnBudget>>10)
	}
	// A message larger than the read limit ends a connection.
	big := `{"type":"subscribe","topic":"` + strings.Repeat("x", 1<<20) + `"}`
	for _, w := range clients {
		_ = w.c.Write(context.Background(), websocket.MessageText, []byte(big))
	}
	eventually(t, "every abusive connection dropped", func() bool { return s.open.Load() == 0 })
	for _, w := range clients {
		w.c.CloseNow()
	}
	clients = nil
	after := heap()
	t.Logf("heap after they were dropped: %d KiB", after>>10)
	if int64(after)-int64(base) > 2<<20 { // a leak of the sessions alone would be 6 MiB (their queues)
		t.Fatalf("the heap stayed %d KiB above where it started once the connections were gone", (int64(after)-int64(base))>>10)
	}
}
