package live

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"

	"github.com/nvent/nvent/internal/domain"
	"github.com/nvent/nvent/internal/httpapi"
	"github.com/nvent/nvent/internal/stream"
)

// Scope limits what a request may follow (a run-scoped token allows one
// run): it returns nil when the request may follow topic (a topic or
// pattern) or runID (one of them is set).
type Scope func(r *http.Request, topic, runID string) error

// ScopeByRun is the Scope of run tokens: runOf returns the run a request's
// token allows (ok false: the request may follow anything). A run token may
// follow its run by runId, client:flow:{run} or store-sync:append:nq:flow:{run},
// and nothing else — no pattern.
func ScopeByRun(runOf func(context.Context) (run string, ok bool)) Scope {
	return func(r *http.Request, topic, runID string) error {
		run, ok := runOf(r.Context())
		if !ok {
			return nil
		}
		if runID == run || topic == "client:flow:"+run || topic == "store-sync:append:"+domain.FlowSubject(run) {
			return nil
		}
		return domain.Errorf(domain.CodeForbidden, "this run token only follows run %s", run)
	}
}

// Counters count connections and slow clients.
type Counters struct {
	// Connections is added +1/-1 as connections open and close, by kind
	// ("sse", "ws").
	Connections func(kind string, delta int)
	// SlowClients counts connections cut for not keeping up.
	SlowClients func(kind string)
}

// Endpoints serves /v1/subscribe (SSE) and /v1/ws (WebSocket).
type Endpoints struct {
	hub      *Hub
	store    Reader
	cfg      Config
	log      *slog.Logger
	counters Counters
	allow    Scope
	open     atomic.Int64
	max      int64
	// closing is closed by Shutdown: every connection ends with a reason.
	closing   chan struct{}
	closeOnce sync.Once
}

// Shutdown tells every SSE and WebSocket connection to end now, with a hint
// to reconnect (and resume) elsewhere. An HTTP server shutting down would
// otherwise wait for every SSE request until its timeout, and never see the
// hijacked WebSockets at all.
func (e *Endpoints) Shutdown() { e.closeOnce.Do(func() { close(e.closing) }) }

// NewEndpoints returns the endpoints over hub. maxConnections caps the
// connections of both kinds together (10,000 when <= 0).
func NewEndpoints(h *Hub, store Reader, cfg Config, log *slog.Logger, c Counters, allow Scope, maxConnections int) *Endpoints {
	cfg.setDefaults()
	if c.Connections == nil {
		c.Connections = func(string, int) {}
	}
	if c.SlowClients == nil {
		c.SlowClients = func(string) {}
	}
	if allow == nil {
		allow = func(*http.Request, string, string) error { return nil }
	}
	if maxConnections <= 0 {
		maxConnections = 10_000
	}
	return &Endpoints{hub: h, store: store, cfg: cfg, log: log, counters: c, allow: allow, max: int64(maxConnections), closing: make(chan struct{})}
}

// admit counts a new connection, refusing it past the limit.
func (e *Endpoints) admit(kind string) error {
	if e.open.Add(1) > e.max {
		e.open.Add(-1)
		return domain.Errorf(domain.CodeUnavailable, "this instance serves %d live connections at most; try again later or elsewhere", e.max)
	}
	e.counters.Connections(kind, 1)
	return nil
}

func (e *Endpoints) leave(kind string) {
	e.open.Add(-1)
	e.counters.Connections(kind, -1)
}

// SSE serves GET /v1/subscribe?topic=PATTERN[&after=SEQ]. Each message is an
// SSE event whose data is the stream message; on a resumable topic its id is
// the event's seq, and Last-Event-ID (sent by EventSource on reconnect) or
// after resumes after it.
func (e *Endpoints) SSE(w http.ResponseWriter, r *http.Request) {
	flusher, ok := w.(http.Flusher)
	if !ok {
		httpapi.WriteError(w, r, e.log, errors.New("streaming unsupported"))
		return
	}
	t := target{topic: r.URL.Query().Get("topic")}
	if t.topic == "" {
		httpapi.WriteError(w, r, e.log, domain.Errorf(domain.CodeInvalidInput, "topic is required, such as topic=client:flow:RUNID or topic=store-sync:append:*"))
		return
	}
	resume := r.Header.Get("Last-Event-ID")
	if resume == "" {
		resume = r.URL.Query().Get("after")
	}
	if resume != "" {
		n, err := strconv.ParseInt(resume, 10, 64)
		if err != nil || n < 0 {
			httpapi.WriteError(w, r, e.log, domain.Errorf(domain.CodeInvalidInput, "Last-Event-ID/after must be a seq, not %q", resume))
			return
		}
		t.afterSeq = n
	}
	if err := e.allow(r, t.topic, t.runID); err != nil {
		httpapi.WriteError(w, r, e.log, err)
		return
	}
	if _, err := e.cfg.compile(t.topic); err != nil {
		httpapi.WriteError(w, r, e.log, err)
		return
	}
	if err := e.admit("sse"); err != nil {
		httpapi.WriteError(w, r, e.log, err)
		return
	}
	defer e.leave("sse")

	out := &sseSink{w: w, f: flusher, instance: e.cfg.InstanceID}
	s := newSession(e.hub, e.store, e.cfg, out)
	defer s.close()
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	ctx := r.Context()
	// A client too slow to keep its queue from filling is cut at once, even
	// in the middle of a write that it does not read.
	rc := http.NewResponseController(w)
	go func() {
		select {
		case <-s.slow:
			e.counters.SlowClients("sse")
			_ = rc.SetWriteDeadline(time.Now())
		case <-ctx.Done():
		}
	}()
	if _, err := s.subscribe(ctx, t); err != nil {
		out.errorEvent(err)
		return
	}
	out.comment("subscribed " + t.topic)
	heartbeat := time.NewTicker(e.cfg.Heartbeat)
	defer heartbeat.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.slow:
			out.errorEvent(domain.Errorf(domain.CodeTooLarge, "slow consumer: the connection fell %d messages behind; reconnect with Last-Event-ID to resume", e.cfg.QueueSize))
			return
		case <-e.closing:
			_, _ = fmt.Fprint(w, "retry: 1000\n\n")
			out.errorEvent(domain.Errorf(domain.CodeUnavailable, "server shutting down; reconnect (with Last-Event-ID) to resume"))
			return
		case <-heartbeat.C:
			if out.comment("ping") != nil {
				return
			}
		case q := <-s.queue:
			if err := s.deliver(ctx, q); err != nil {
				out.errorEvent(err)
				return
			}
		}
	}
}

// sseSink writes SSE frames.
type sseSink struct {
	w        http.ResponseWriter
	f        http.Flusher
	instance string
}

func (o *sseSink) write(id, event string, data []byte) error {
	var b strings.Builder
	if id != "" {
		fmt.Fprintf(&b, "id: %s\n", id)
	}
	if event != "" {
		fmt.Fprintf(&b, "event: %s\n", event)
	}
	fmt.Fprintf(&b, "data: %s\n\n", data)
	if _, err := o.w.Write([]byte(b.String())); err != nil {
		return err
	}
	o.f.Flush()
	return nil
}

func (o *sseSink) comment(text string) error {
	if _, err := fmt.Fprintf(o.w, ": %s\n\n", text); err != nil {
		return err
	}
	o.f.Flush()
	return nil
}

func (o *sseSink) errorEvent(err error) {
	b, _ := json.Marshal(map[string]string{"code": string(domain.ErrorCode(err)), "message": domain.PublicMessage(err)})
	_ = o.write("", "error", b)
}

func (o *sseSink) history(sub *subscription, events []domain.Event) error {
	for _, ev := range events {
		if err := o.event(sub, historyMessage(sub, ev, o.instance), ev.Seq); err != nil {
			return err
		}
	}
	return nil
}

func (o *sseSink) event(sub *subscription, m stream.Message, seq int64) error {
	b, err := stream.Encode(m)
	if err != nil {
		return err
	}
	id := ""
	if seq > 0 {
		id = strconv.FormatInt(seq, 10)
	}
	return o.write(id, "", b)
}

// clientMessage is what a WebSocket client sends.
type clientMessage struct {
	Type     string `json:"type"`
	Topic    string `json:"topic,omitempty"`
	RunID    string `json:"runId,omitempty"`
	AfterSeq int64  `json:"afterSeq,omitempty"`
}

// maxClientMessage caps what a WebSocket client may send in one message
// (more when the pattern limit needs it); a larger message ends the
// connection.
const maxClientMessage = 4096

// readLimit is the largest WebSocket message a client may send: room for
// the longest pattern it may subscribe to.
func (c Config) readLimit() int64 { return int64(max(maxClientMessage, c.MaxPatternBytes+1024)) }

// decodeClientMessage parses one WebSocket message from a client. Anything
// that is not a JSON object of the protocol's shape comes back as type
// "invalid", which is answered with an error while the connection goes on.
func decodeClientMessage(b []byte) clientMessage {
	var m clientMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return clientMessage{Type: "invalid"}
	}
	return m
}

// WS serves GET /v1/ws: the client sends subscribe (by topic, or by runId
// with afterSeq), unsubscribe and ping; the server answers history (a run's
// events after afterSeq, from the store), subscribed, event, pong and error.
func (e *Endpoints) WS(w http.ResponseWriter, r *http.Request) {
	if err := e.admit("ws"); err != nil {
		httpapi.WriteError(w, r, e.log, err)
		return
	}
	defer e.leave("ws")
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: false})
	if err != nil {
		return // Accept answered the client already
	}
	defer c.CloseNow()
	c.SetReadLimit(e.cfg.readLimit())
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	// Writes stop at once when the client turns out too slow, even one that
	// is blocked on a client that does not read.
	wctx, cancelWrites := context.WithCancel(ctx)
	defer cancelWrites()

	out := &wsSink{c: c, ctx: wctx, instance: e.cfg.InstanceID}
	s := newSession(e.hub, e.store, e.cfg, out)
	defer s.close()
	go func() {
		select {
		case <-s.slow:
			e.counters.SlowClients("ws")
			cancelWrites()
		case <-ctx.Done():
		}
	}()

	// Reads run on their own goroutine and hand commands to the session's
	// loop, which alone writes: history and live events stay in order.
	cmds := make(chan clientMessage)
	readErr := make(chan error, 1)
	go func() {
		for {
			_, b, err := c.Read(ctx)
			if err != nil {
				readErr <- err
				return
			}
			select {
			case cmds <- decodeClientMessage(b):
			case <-ctx.Done():
				return
			}
		}
	}()
	heartbeat := time.NewTicker(e.cfg.Heartbeat)
	defer heartbeat.Stop()
	for {
		select {
		case <-readErr:
			return
		case <-e.closing:
			_ = c.Close(websocket.StatusGoingAway, "server shutting down; reconnect and resubscribe with afterSeq")
			return
		case <-s.slow:
			// A client that does not read cannot read a reason either: the
			// connection ends now (it resubscribes with afterSeq).
			return
		case <-heartbeat.C:
			pctx, pcancel := context.WithTimeout(ctx, e.cfg.Heartbeat)
			err := c.Ping(pctx)
			pcancel()
			if err != nil {
				return
			}
		case m := <-cmds:
			if err := e.command(ctx, r, s, out.send, m); err != nil {
				return
			}
		case q := <-s.queue:
			if err := s.deliver(ctx, q); err != nil {
				if wctx.Err() == nil {
					_ = out.send(map[string]any{"type": "error", "code": domain.ErrorCode(err), "message": domain.PublicMessage(err)})
					_ = c.Close(websocket.StatusInternalError, "delivery failed")
				}
				return
			}
		}
	}
}

// command carries out one client message, answering it with send (after
// the history a subscription sends through the session); an error from
// send ends the connection. A message that cannot be carried out is
// answered with an error message, and the connection goes on.
func (e *Endpoints) command(ctx context.Context, r *http.Request, s *session, send func(any) error, m clientMessage) error {
	fail := func(err error) error {
		return send(map[string]any{"type": "error", "code": domain.ErrorCode(err), "message": domain.PublicMessage(err)})
	}
	t := target{topic: m.Topic, runID: m.RunID, afterSeq: m.AfterSeq}
	switch m.Type {
	case "ping":
		return send(map[string]any{"type": "pong"})
	case "subscribe":
		if (t.topic == "") == (t.runID == "") {
			return fail(domain.Errorf(domain.CodeInvalidInput, "subscribe takes a topic or a runId"))
		}
		if err := e.allow(r, t.topic, t.runID); err != nil {
			return fail(err)
		}
		if _, err := s.subscribe(ctx, t); err != nil {
			return fail(err)
		}
		ack := map[string]any{"type": "subscribed"}
		if t.runID != "" {
			ack["runId"] = t.runID
		} else {
			ack["topic"] = t.topic
		}
		return send(ack)
	case "unsubscribe":
		s.unsubscribe(t)
		return send(map[string]any{"type": "unsubscribed", "topic": t.topic, "runId": t.runID})
	case "invalid":
		return fail(domain.Errorf(domain.CodeInvalidInput, "messages must be JSON objects such as {\"type\":\"subscribe\",\"runId\":\"…\",\"afterSeq\":0}"))
	}
	return fail(domain.Errorf(domain.CodeInvalidInput, "unknown message type %q (subscribe, unsubscribe, ping)", m.Type))
}

// wsSink writes JSON messages on a WebSocket.
type wsSink struct {
	c        *websocket.Conn
	ctx      context.Context
	instance string
}

func (o *wsSink) send(v any) error {
	ctx, cancel := context.WithTimeout(o.ctx, 10*time.Second)
	defer cancel()
	return wsjson.Write(ctx, o.c, v)
}

func (o *wsSink) history(sub *subscription, events []domain.Event) error {
	if sub.runID != "" {
		return o.send(map[string]any{"type": "history", "runId": sub.runID, "events": events})
	}
	msgs := make([]stream.Message, len(events))
	for i, ev := range events {
		msgs[i] = historyMessage(sub, ev, o.instance)
	}
	return o.send(map[string]any{"type": "history", "topic": sub.pattern.String(), "messages": msgs})
}

func (o *wsSink) event(sub *subscription, m stream.Message, seq int64) error {
	if sub.runID != "" {
		var d struct {
			Event json.RawMessage `json:"event"`
		}
		_ = json.Unmarshal(m.Data, &d)
		return o.send(map[string]any{"type": "event", "runId": sub.runID, "event": d.Event})
	}
	return o.send(map[string]any{"type": "event", "topic": m.Topic, "data": m.Data, "eventId": m.EventID,
		"timestamp": domain.FormatTime(m.Timestamp), "messageType": m.Type})
}
