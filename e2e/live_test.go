package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"
)

// sseEvent is one Server-Sent Event.
type sseEvent struct {
	id, event, data string
}

// sseClient is a real EventSource-like client: it reads frames until closed.
type sseClient struct {
	status int
	events chan sseEvent
	cancel context.CancelFunc
}

func openSSE(t *testing.T, url string, header map[string]string) *sseClient {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatalf("SSE %s: %v", url, err)
	}
	c := &sseClient{status: resp.StatusCode, events: make(chan sseEvent, 10_000), cancel: cancel}
	t.Cleanup(cancel)
	go func() {
		defer resp.Body.Close()
		defer close(c.events)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64*1024), 1<<20)
		var ev sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if ev.data != "" || ev.event != "" {
					c.events <- ev
				}
				ev = sseEvent{}
			case strings.HasPrefix(line, "id: "):
				ev.id = line[4:]
			case strings.HasPrefix(line, "event: "):
				ev.event = line[7:]
			case strings.HasPrefix(line, "data: "):
				ev.data = line[6:]
			}
		}
	}()
	return c
}

// seqs reads n events and returns their ids as seqs, failing on anything
// but data events.
func (c *sseClient) seqs(t *testing.T, n int) []int64 {
	t.Helper()
	var out []int64
	for len(out) < n {
		select {
		case ev, ok := <-c.events:
			if !ok {
				t.Fatalf("SSE stream ended after %v", out)
			}
			if ev.event != "" {
				t.Fatalf("SSE %s event: %s", ev.event, ev.data)
			}
			seq, err := strconv.ParseInt(ev.id, 10, 64)
			if err != nil {
				t.Fatalf("SSE event without a seq id: %+v", ev)
			}
			var m struct {
				Topic string
				Data  struct{ Event struct{ Seq int64 } }
			}
			if err := json.Unmarshal([]byte(ev.data), &m); err != nil || m.Data.Event.Seq != seq {
				t.Fatalf("SSE data %s does not carry seq %d (%v)", ev.data, seq, err)
			}
			out = append(out, seq)
		case <-time.After(10 * time.Second):
			t.Fatalf("SSE: %d of %d events within 10s: %v", len(out), n, out)
		}
	}
	return out
}

func seqRange(from, to int64) []int64 {
	var out []int64
	for s := from; s <= to; s++ {
		out = append(out, s)
	}
	return out
}

func sameInts(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func appendN(t *testing.T, p *Proc, subject string, n int) {
	t.Helper()
	for range n {
		appendEvents(t, p, subject, `{"type":"step.completed"}`)
	}
}

func TestSSEResumesAcrossInstancesWithoutGapOrDuplicate(t *testing.T) {
	env, _, _ := clusterEnv(t)
	dir := t.TempDir()
	a, b := Serve(t, bin, dir, env...), Serve(t, bin, dir, env...)
	appendN(t, a, "nq:flow:r1", 5)

	c := openSSE(t, a.URL+"/v1/subscribe?topic=client:flow:r1&after=0", nil)
	if c.status != 200 {
		t.Fatalf("SSE status %d", c.status)
	}
	if got := c.seqs(t, 5); !sameInts(got, seqRange(1, 5)) {
		t.Fatalf("history = %v", got)
	}
	appendN(t, b, "nq:flow:r1", 3) // written on the other instance
	if got := c.seqs(t, 3); !sameInts(got, seqRange(6, 8)) {
		t.Fatalf("live = %v", got)
	}
	c.cancel() // a forced disconnect
	appendN(t, a, "nq:flow:r1", 4)

	// EventSource reconnects with Last-Event-ID, here to the other instance.
	c2 := openSSE(t, b.URL+"/v1/subscribe?topic=client:flow:r1", map[string]string{"Last-Event-ID": "8"})
	if got := c2.seqs(t, 4); !sameInts(got, seqRange(9, 12)) {
		t.Fatalf("after resuming at 8: %v, want 9..12 exactly", got)
	}
	appendN(t, a, "nq:flow:r1", 2)
	if got := c2.seqs(t, 2); !sameInts(got, seqRange(13, 14)) {
		t.Fatalf("live after resume = %v", got)
	}
	select {
	case ev := <-c2.events:
		t.Fatalf("an extra event after 14: %+v", ev)
	case <-time.After(300 * time.Millisecond):
	}
}

// wsClient is a WebSocket client that collects what the server sends.
type wsClient struct {
	c    *websocket.Conn
	msgs chan map[string]any
	done chan error
}

func dialWS(t *testing.T, url string) *wsClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, strings.Replace(url, "http://", "ws://", 1), nil)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	c.SetReadLimit(1 << 22)
	w := &wsClient{c: c, msgs: make(chan map[string]any, 10_000), done: make(chan error, 1)}
	t.Cleanup(func() { c.CloseNow() })
	go func() {
		for {
			var m map[string]any
			if err := wsjson.Read(context.Background(), c, &m); err != nil {
				w.done <- err
				close(w.msgs)
				return
			}
			w.msgs <- m
		}
	}()
	return w
}

func (w *wsClient) send(t *testing.T, v any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := wsjson.Write(ctx, w.c, v); err != nil {
		t.Fatal(err)
	}
}

// next returns the next message of one of the given types, failing on an
// error message or the deadline.
func (w *wsClient) next(t *testing.T, types ...string) map[string]any {
	t.Helper()
	for {
		select {
		case m, ok := <-w.msgs:
			if !ok {
				t.Fatalf("WebSocket closed: %v", <-w.done)
			}
			for _, typ := range types {
				if m["type"] == typ {
					return m
				}
			}
			if m["type"] == "error" {
				t.Fatalf("WebSocket error: %v", m)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no %v within 10s", types)
		}
	}
}

// runSeqs reads history and event messages of a run until it has n seqs.
func (w *wsClient) runSeqs(t *testing.T, n int) []int64 {
	t.Helper()
	var out []int64
	for len(out) < n {
		m := w.next(t, "history", "event")
		if m["type"] == "history" {
			for _, e := range m["events"].([]any) {
				out = append(out, int64(e.(map[string]any)["seq"].(float64)))
			}
			continue
		}
		out = append(out, int64(m["event"].(map[string]any)["seq"].(float64)))
	}
	return out
}

func TestWebSocketResumesAndAnswersBadMessages(t *testing.T) {
	env, _, _ := clusterEnv(t)
	dir := t.TempDir()
	a, b := Serve(t, bin, dir, env...), Serve(t, bin, dir, env...)
	appendN(t, a, "nq:flow:r2", 3)
	w := dialWS(t, a.URL+"/v1/ws")
	w.send(t, map[string]any{"type": "ping"})
	w.next(t, "pong")
	w.c.Write(context.Background(), websocket.MessageText, []byte(`{not json`))
	if m := w.next(t, "error"); m["code"] != "invalid_input" {
		t.Fatalf("bad JSON answered %v", m)
	}
	w.send(t, map[string]any{"type": "subscribe", "runId": "r2", "afterSeq": 1})
	if got := w.runSeqs(t, 2); !sameInts(got, seqRange(2, 3)) {
		t.Fatalf("history after 1 = %v", got)
	}
	appendN(t, b, "nq:flow:r2", 2)
	if got := w.runSeqs(t, 2); !sameInts(got, seqRange(4, 5)) {
		t.Fatalf("live = %v", got)
	}
	w.c.CloseNow() // forced disconnect
	appendN(t, a, "nq:flow:r2", 3)
	w2 := dialWS(t, b.URL+"/v1/ws")
	w2.send(t, map[string]any{"type": "subscribe", "runId": "r2", "afterSeq": 5})
	if got := w2.runSeqs(t, 3); !sameInts(got, seqRange(6, 8)) {
		t.Fatalf("after resuming at 5 on the other instance: %v, want 6..8", got)
	}
	appendN(t, a, "nq:flow:r2", 1)
	if got := w2.runSeqs(t, 1); !sameInts(got, []int64{9}) {
		t.Fatalf("live after resume = %v", got)
	}
}

func TestASlowClientIsCutWithoutSlowingAFastOne(t *testing.T) {
	env, _, _ := clusterEnv(t)
	// A queue well above one stream read (up to 256 entries arrive at
	// once) so that the fast client, reading as fast as this process can,
	// is never the one cut; the slow one falls 4,000 events behind.
	env = append(env, "NVENT_LIVE_QUEUE_SIZE=512")
	dir := t.TempDir()
	p := Serve(t, bin, dir, env...)
	fast := dialWS(t, p.URL+"/v1/ws")
	fast.send(t, map[string]any{"type": "subscribe", "runId": "busy"})
	fast.next(t, "subscribed")

	// The slow client subscribes, then never reads again.
	ctx := context.Background()
	slow, _, err := websocket.Dial(ctx, strings.Replace(p.URL, "http://", "ws://", 1)+"/v1/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.CloseNow()
	if err := wsjson.Write(ctx, slow, map[string]any{"type": "subscribe", "runId": "busy"}); err != nil {
		t.Fatal(err)
	}

	// More than the kernel's socket buffers hold for a reader that never
	// reads (several MB on loopback).
	const n = 4000
	big := `{"type":"step.completed","data":"` + strings.Repeat("x", 4000) + `"}`
	var batch []string
	for range 20 {
		batch = append(batch, big)
	}
	for i := 0; i < n; i += 20 {
		body := `{"events":[` + strings.Join(batch, ",") + `]}`
		if status, resp := p.Do(t, "POST", "/v1/streams/nq:flow:busy/events", body); status != 201 {
			t.Fatalf("append: %d %s", status, resp)
		}
	}
	got := fast.runSeqs(t, n)
	if !sameInts(got, seqRange(1, n)) {
		t.Fatalf("the fast client got %d events out of order or with gaps", len(got))
	}
	Eventually(t, 20*time.Second, func() bool { return p.Metric(t, "nvent_live_slow_clients_total", `kind="ws"`) >= 1 },
		func() string { return "the slow client was never cut" })
	// The server let go of the slow connection and kept the fast one.
	Eventually(t, 20*time.Second, func() bool { return p.Metric(t, "nvent_live_connections", `kind="ws"`) == 1 },
		func() string {
			return fmt.Sprintf("the server holds %v WebSocket connections, want only the fast one", p.Metric(t, "nvent_live_connections", `kind="ws"`))
		})
	fast.send(t, map[string]any{"type": "ping"})
	fast.next(t, "pong")
}

func TestLiveEndpointsRefuseWrongTokens(t *testing.T) {
	env, _, _ := clusterEnv(t)
	env = append(env, "NVENT_AUTH_TOKEN=s3cret")
	p := Serve(t, bin, t.TempDir(), env...)
	auth := func(method, path, body, token string) (int, []byte) {
		t.Helper()
		req, _ := http.NewRequest(method, p.URL+path, strings.NewReader(body))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b strings.Builder
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() && b.Len() < 4096 {
			b.WriteString(sc.Text())
			if resp.Header.Get("Content-Type") == "text/event-stream" {
				break
			}
		}
		return resp.StatusCode, []byte(b.String())
	}
	status, body := auth("POST", "/v1/runs/run-a/token", "", "s3cret")
	var tok struct{ Token string }
	if status != 201 || json.Unmarshal(body, &tok) != nil || tok.Token == "" {
		t.Fatalf("issuing a run token: %d %s", status, body)
	}
	for _, tc := range []struct {
		name, path, token string
		want              int
	}{
		{"no token", "/v1/subscribe?topic=client:flow:run-a", "", 401},
		{"wrong token", "/v1/subscribe?topic=client:flow:run-a", "nope", 401},
		{"forged run token", "/v1/subscribe?topic=client:flow:run-a", tok.Token + "x", 401},
		{"run token, another run", "/v1/subscribe?topic=client:flow:run-b", tok.Token, 403},
		{"run token, a pattern", "/v1/subscribe?topic=client:flow:*", tok.Token, 403},
		{"run token, another run's history", "/v1/streams/nq:flow:run-b/events", tok.Token, 403},
		{"run token, a document", "/v1/docs/runs/run-a", tok.Token, 403},
		{"run token, its run", "/v1/subscribe?topic=client:flow:run-a", tok.Token, 200},
		{"run token, its history", "/v1/streams/nq:flow:run-a/events", tok.Token, 200},
		{"the auth token", "/v1/subscribe?topic=client:flow:*", "s3cret", 200},
	} {
		if status, body := auth("GET", tc.path, "", tc.token); status != tc.want {
			t.Errorf("%s: %d %s, want %d", tc.name, status, body, tc.want)
		}
	}
	// Over a WebSocket (token in the query, as browsers must), a run token
	// cannot subscribe to or resume another run.
	w := dialWS(t, p.URL+"/v1/ws?access_token="+tok.Token)
	w.send(t, map[string]any{"type": "subscribe", "runId": "run-b", "afterSeq": 0})
	if m := w.next(t, "error"); m["code"] != "forbidden" {
		t.Fatalf("subscribing to another run: %v", m)
	}
	w.send(t, map[string]any{"type": "subscribe", "runId": "run-a"})
	w.next(t, "subscribed")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, _, err := websocket.Dial(ctx, strings.Replace(p.URL, "http://", "ws://", 1)+"/v1/ws", nil); err == nil {
		t.Fatal("a WebSocket without a token was accepted")
	}
}
