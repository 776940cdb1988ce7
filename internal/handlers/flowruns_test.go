package handlers_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nvent/nvent/internal/domain"
	"github.com/nvent/nvent/internal/handlers"
	"github.com/nvent/nvent/internal/router"
	"github.com/nvent/nvent/internal/stream"
)

func startFlowRunsNode(t *testing.T, handled *counter) *node {
	return startNode(t, newMemoryBackend(t), "inst-a", nil, func(n *node) []router.Wiring {
		return []router.Wiring{handlers.NewFlowRuns(n.subscriber(t, stream.Competing(handlers.FlowRunsGroup)), n.store, n.pub, handled)}
	})
}

// runDoc reads the run document of runID.
func runDoc(t *testing.T, n *node, runID string) (handlers.Run, json.RawMessage) {
	t.Helper()
	d, err := n.store.GetDocument(context.Background(), handlers.RunsCollection, runID)
	if err != nil {
		t.Fatalf("run document %s: %v", runID, err)
	}
	var run handlers.Run
	if err := json.Unmarshal(d.Data, &run); err != nil {
		t.Fatal(err)
	}
	return run, d.Data
}

func TestFlowRunsPublishesEachStatusChangeOnce(t *testing.T) {
	tl := newTally()
	handled := tl.counter()
	n := startFlowRunsNode(t, handled)
	statuses := n.tail(t, handlers.RunStatusTopic)
	events := n.tail(t, "flow:event:*")

	r1 := domain.FlowSubject("r1")
	appendOne(t, n.store, r1, domain.NewEvent{Type: "flow.start", FlowName: "billing"})
	appendOne(t, n.store, r1, domain.NewEvent{Type: "step.started", StepName: "a"})
	appendOne(t, n.store, r1, domain.NewEvent{Type: "log.line"}) // not lifecycle: read from the store
	appendOne(t, n.store, r1, domain.NewEvent{Type: "step.completed", StepName: "a"})
	appendOne(t, n.store, r1, domain.NewEvent{Type: "flow.completed"})
	r2 := domain.FlowSubject("r2")
	appendOne(t, n.store, r2, domain.NewEvent{Type: "flow.start", FlowName: "billing"})
	appendOne(t, n.store, r2, domain.NewEvent{Type: "step.failed", StepName: "x"})
	appendOne(t, n.store, r2, domain.NewEvent{Type: "flow.failed"})

	want := []string{"r1:running:1", "r1:completed:5", "r2:running:1", "r2:failed:3"}
	got := map[string]stream.Message{}
	for range want {
		m := next(t, statuses, 10*time.Second)
		if _, dup := got[m.EventID]; dup {
			t.Fatalf("status %s published twice", m.EventID)
		}
		got[m.EventID] = m
	}
	for _, id := range want {
		m, ok := got[id]
		if !ok {
			t.Fatalf("status messages %v lack %s", keys(got), id)
		}
		var run handlers.Run
		if err := json.Unmarshal(m.Data, &run); err != nil {
			t.Fatal(err)
		}
		runID, rest, _ := strings.Cut(id, ":")
		status, _, _ := strings.Cut(rest, ":")
		if m.Type != handlers.RunStatusType || m.Topic != handlers.RunStatusTopic || run.RunID != runID || run.Status != status || run.FlowName != "billing" {
			t.Fatalf("status message %s: %s %s %s", id, m.Type, m.Topic, m.Data)
		}
	}
	tl.waitSum(t, 7, 10*time.Second, handled) // the lifecycle events
	doc, raw := runDoc(t, n, "r1")
	if doc.Status != "completed" || doc.LastSeq != 5 || doc.Steps.Started != 1 || doc.Steps.Completed != 1 || doc.StartedAt == nil || doc.FinishedAt == nil {
		t.Fatalf("run r1: %s", raw)
	}
	// The completed message carries the run as saved.
	var sent handlers.Run
	_ = json.Unmarshal(got["r1:completed:5"].Data, &sent)
	if b, _ := json.Marshal(sent); string(b) != string(raw) {
		t.Fatalf("status message %s, document %s", b, raw)
	}

	// Every lifecycle event delivered again changes nothing and publishes
	// nothing; a new run afterwards is the next status message.
	var redeliver []stream.Message
	for range 7 {
		redeliver = append(redeliver, next(t, events, 10*time.Second))
	}
	for _, m := range redeliver {
		msg := stream.NewWatermillMessage(stream.Message{Type: m.Type, Data: m.Data, EventID: m.EventID, Timestamp: m.Timestamp})
		if err := n.pub.Publish(m.Topic, msg); err != nil {
			t.Fatal(err)
		}
	}
	appendOne(t, n.store, domain.FlowSubject("r3"), domain.NewEvent{Type: "flow.start", FlowName: "billing"})
	if m := next(t, statuses, 10*time.Second); m.EventID != "r3:running:1" {
		t.Fatalf("after redelivered events, status message %s %s", m.EventID, m.Data)
	}
	if again, _ := runDoc(t, n, "r1"); again.LastSeq != 5 || again.Steps.Started != 1 {
		t.Fatalf("a redelivery changed run r1: %+v", again)
	}
}

func TestFlowRunsFillsFromTheStoreWhatTheStreamMissed(t *testing.T) {
	tl := newTally()
	handled := tl.counter()
	n := startFlowRunsNode(t, handled)
	statuses := n.tail(t, handlers.RunStatusTopic)

	// Events 1-5 never reach the stream (trimmed, say); then 6 and 7 do.
	subject := domain.FlowSubject("gappy")
	ctx := context.Background()
	if _, err := n.inner.Append(ctx, subject, []domain.NewEvent{
		{Type: "flow.start", FlowName: "billing"},
		{Type: "step.started"}, {Type: "step.completed"},
		{Type: "step.started"}, {Type: "step.failed"},
	}, domain.AppendOptions{}); err != nil {
		t.Fatal(err)
	}
	appendOne(t, n.store, subject, domain.NewEvent{Type: "flow.failed"})
	appendOne(t, n.store, subject, domain.NewEvent{Type: "log.line", FlowName: "ignored"}) // not part of the run yet
	tl.waitSum(t, 1, 10*time.Second, handled)

	evs, err := n.store.Read(ctx, subject, domain.ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	fold := handlers.NewRunFold("gappy")
	for _, e := range evs {
		fold.Apply(e)
	}
	want, _ := fold.Run()
	got, raw := runDoc(t, n, "gappy")
	if wantJSON, _ := json.Marshal(want); string(wantJSON) != string(raw) || got.LastSeq != 6 || got.Status != "failed" || got.Steps.Failed != 1 {
		t.Fatalf("run document %s, want the fold %s", raw, wantJSON)
	}
	// Its status changes were published in order, the first one included.
	for _, id := range []string{"gappy:running:1", "gappy:failed:6"} {
		if m := next(t, statuses, 10*time.Second); m.EventID != id {
			t.Fatalf("status message %s, want %s", m.EventID, id)
		}
	}
}

func TestFlowRunsWithoutPublisherKeepsRuns(t *testing.T) {
	tl := newTally()
	handled := tl.counter()
	n := startNode(t, newMemoryBackend(t), "inst-a", nil, func(n *node) []router.Wiring {
		return []router.Wiring{handlers.NewFlowRuns(n.subscriber(t, stream.Competing(handlers.FlowRunsGroup)), n.store, nil, handled)}
	})
	appendOne(t, n.store, domain.FlowSubject("q"), domain.NewEvent{Type: "flow.start", FlowName: "f"})
	appendOne(t, n.store, domain.FlowSubject("q"), domain.NewEvent{Type: "flow.completed"})
	tl.waitSum(t, 2, 10*time.Second, handled)
	if run, raw := runDoc(t, n, "q"); run.Status != "completed" || run.LastSeq != 2 {
		t.Fatalf("run q: %s", raw)
	}
}

func TestRunJSONHasMillisecondTimes(t *testing.T) {
	ts := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	run := handlers.Run{RunID: "r", Status: "completed"}
	handlers.ApplyRunEvent(&run, domain.Event{Seq: 1, Type: "flow.start", TS: ts})
	b, err := json.Marshal(run)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"runId":"r","status":"running","startedAt":"2026-01-02T03:04:05.000Z","lastSeq":1,"steps":{"started":0,"completed":0,"failed":0}}`; string(b) != want {
		t.Fatalf("run JSON %s, want %s", b, want)
	}
	var back handlers.Run
	if err := json.Unmarshal(b, &back); err != nil || !back.StartedAt.Equal(ts) {
		t.Fatalf("run JSON does not read back: %v %v", back.StartedAt, err)
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
