package handlers_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/nvent/nvent/internal/domain"
	"github.com/nvent/nvent/internal/handlers"
	"github.com/nvent/nvent/internal/router"
	"github.com/nvent/nvent/internal/stream"
)

// receiver is a webhook endpoint that fails the first attempts of every
// Idempotency-Key (failFirst of them, or every one for the keys in
// alwaysFail) and records what it accepted.
type receiver struct {
	failFirst  int
	alwaysFail map[string]bool

	mu       sync.Mutex
	attempts map[string]int               // by key
	accepted map[string][]json.RawMessage // by key: bodies answered 2xx
	bad      []string                     // requests that broke the protocol
}

func newReceiver(t *testing.T, failFirst int, alwaysFail ...string) (*receiver, string) {
	rc := &receiver{failFirst: failFirst, alwaysFail: map[string]bool{}, attempts: map[string]int{}, accepted: map[string][]json.RawMessage{}}
	for _, k := range alwaysFail {
		rc.alwaysFail[k] = true
	}
	srv := httptest.NewServer(rc)
	t.Cleanup(srv.Close)
	return rc, srv.URL + "/hooks/flows"
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	key := r.Header.Get("Idempotency-Key")
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if r.Method != http.MethodPost || r.URL.Path != "/hooks/flows" || key == "" || r.Header.Get("Content-Type") != "application/json" || !json.Valid(body) {
		rc.bad = append(rc.bad, fmt.Sprintf("%s %s key %q type %q: %s", r.Method, r.URL.Path, key, r.Header.Get("Content-Type"), body))
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	rc.attempts[key]++
	if rc.alwaysFail[key] || rc.attempts[key] <= rc.failFirst {
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	rc.accepted[key] = append(rc.accepted[key], body)
	w.WriteHeader(http.StatusNoContent)
}

// startWebhookNode starts an instance whose only wiring besides the
// coordinator is a webhook to url.
func startWebhookNode(t *testing.T, url string, delivered *counter) *node {
	return startNode(t, newMemoryBackend(t), "inst-a", nil, func(n *node) []router.Wiring {
		w, err := handlers.NewWebhook(handlers.WebhookConfig{URL: url, Timeout: 5 * time.Second}, n.subscriber(t, stream.Competing(handlers.WebhookGroup)), delivered)
		if err != nil {
			t.Fatal(err)
		}
		return []router.Wiring{w}
	})
}

// completeRun appends a whole run and returns its flow.completed event.
func completeRun(t *testing.T, n *node, runID string) domain.Event {
	t.Helper()
	subject := domain.FlowSubject(runID)
	appendOne(t, n.store, subject, domain.NewEvent{Type: "flow.start", FlowName: "billing"})
	appendOne(t, n.store, subject, domain.NewEvent{Type: "step.started", StepName: "charge"})
	appendOne(t, n.store, subject, domain.NewEvent{Type: "step.completed", StepName: "charge"})
	done := appendOne(t, n.store, subject, domain.NewEvent{Type: "flow.completed", Data: json.RawMessage(`{"total":3}`)})
	appendOne(t, n.store, subject, domain.NewEvent{Type: "log.line"})
	return done
}

func TestWebhookDeliversEachCompletedRunOnceDespiteFailures(t *testing.T) {
	rc, url := newReceiver(t, 2) // every delivery fails twice, then succeeds
	tl := newTally()
	delivered := tl.counter()
	n := startWebhookNode(t, url, delivered)

	const runs = 10
	completed := map[string]domain.Event{}
	for i := range runs {
		e := completeRun(t, n, fmt.Sprintf("run-%d", i))
		completed[e.ID] = e
	}
	tl.waitSum(t, runs, 10*time.Second, delivered)

	rc.mu.Lock()
	defer rc.mu.Unlock()
	if len(rc.bad) > 0 {
		t.Fatalf("malformed webhook requests: %v", rc.bad)
	}
	if len(rc.accepted) != runs {
		t.Fatalf("the webhook accepted deliveries for %d keys, want one per completed run (%d): %v", len(rc.accepted), runs, rc.attempts)
	}
	for key, bodies := range rc.accepted {
		want, ok := completed[key]
		if !ok {
			t.Fatalf("delivery with Idempotency-Key %q, which is no flow.completed event", key)
		}
		if len(bodies) != 1 || rc.attempts[key] != 3 {
			t.Fatalf("%s: %d successful deliveries in %d attempts, want 1 in 3", key, len(bodies), rc.attempts[key])
		}
		var got domain.Event
		if err := json.Unmarshal(bodies[0], &got); err != nil {
			t.Fatal(err)
		}
		if got.ID != want.ID || got.Type != "flow.completed" || got.RunID != want.RunID || got.Seq != want.Seq || string(got.Data) != `{"total":3}` {
			t.Fatalf("delivered %s, want the event %+v", bodies[0], want)
		}
	}
}

func TestWebhookPoisonsADeliveryThatKeepsFailing(t *testing.T) {
	rc, url := newReceiver(t, 0, "will-fail")
	tl := newTally()
	delivered := tl.counter()
	n := startWebhookNode(t, url, delivered)
	poison := n.tail(t, "poison:*")

	subject := domain.FlowSubject("doomed")
	appendOne(t, n.store, subject, domain.NewEvent{Type: "flow.start", FlowName: "billing"})
	appendOne(t, n.store, subject, domain.NewEvent{ID: "will-fail", Type: "flow.completed"})
	after := completeRun(t, n, "after")

	m := next(t, poison, 10*time.Second)
	if m.Topic != "poison:router" || m.EventID != "will-fail" {
		t.Fatalf("poison topic got %s %s", m.Topic, m.EventID)
	}
	tl.waitSum(t, 1, 10*time.Second, delivered)
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.attempts["will-fail"] != 4 {
		t.Errorf("the failing delivery was attempted %d times, want 1 + 3 retries", rc.attempts["will-fail"])
	}
	if len(rc.accepted[after.ID]) != 1 {
		t.Errorf("the delivery after the poisoned one: %d", len(rc.accepted[after.ID]))
	}
}

func TestWebhookWithoutURLAddsNoHandler(t *testing.T) {
	w, err := handlers.NewWebhook(handlers.WebhookConfig{}, nil, newTally().counter())
	if err != nil {
		t.Fatal(err)
	}
	r, err := message.NewRouter(message.RouterConfig{}, watermill.NopLogger{})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Register(r); err != nil {
		t.Fatal(err)
	}
	if h := r.Handlers(); len(h) != 0 {
		t.Fatalf("a webhook without URL registered %d handlers", len(h))
	}
}

func TestWebhookConfigIsValidated(t *testing.T) {
	for _, url := range []string{"ftp://example.com/x", "/relative", "http://", "::bad"} {
		if _, err := handlers.NewWebhook(handlers.WebhookConfig{URL: url}, nil, newTally().counter()); err == nil {
			t.Errorf("URL %q was accepted", url)
		}
	}
	if _, err := handlers.NewWebhook(handlers.WebhookConfig{URL: "http://example.com/x", Timeout: -time.Second}, nil, newTally().counter()); err == nil {
		t.Error("a negative timeout was accepted")
	}
}
