package handlers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/nvent/nvent/internal/domain"
	"github.com/nvent/nvent/internal/stream"
)

// RunsCollection holds one document per flow run, keyed by run id.
const RunsCollection = "runs"

// Run is the document FlowRuns keeps for a flow run.
type Run struct {
	RunID      string     `json:"runId"`
	FlowName   string     `json:"flowName,omitempty"`
	Status     string     `json:"status"` // running | completed | failed | canceled
	StartedAt  *time.Time `json:"startedAt,omitempty"`
	FinishedAt *time.Time `json:"finishedAt,omitempty"`
	// LastSeq is the seq of the last event applied: events at or below it
	// are duplicates and change nothing.
	LastSeq int64 `json:"lastSeq"`
	Steps   struct {
		Started   int `json:"started"`
		Completed int `json:"completed"`
		Failed    int `json:"failed"`
	} `json:"steps"`
}

// RunStore is what FlowRuns needs of the store.
type RunStore interface {
	GetDocument(ctx context.Context, collection, id string) (domain.Document, error)
	SaveDocument(ctx context.Context, collection, id string, data json.RawMessage, opts domain.SaveOptions) (domain.Document, error)
	Read(ctx context.Context, subject string, opts domain.ReadOptions) ([]domain.Event, error)
}

// Counter counts handled messages (a Prometheus counter is one).
type Counter interface{ Inc() }

// FlowRuns is the wiring that keeps a Run document per flow run from the
// run's lifecycle events on flow:event:*. It consumes them as a competing
// group, so each event is applied by one instance of the cluster; applying
// is idempotent (by seq: a redelivered event changes nothing), in seq order
// (a gap is filled from the store) and optimistic (a concurrent update of
// the run is a conflict that the router retries).
type FlowRuns struct {
	sub     message.Subscriber
	store   RunStore
	handled Counter
}

// FlowRunsGroup is the competing group of the FlowRuns wiring.
const FlowRunsGroup = "flow-runs"

// NewFlowRuns returns the wiring; sub must be a competing subscriber of
// group FlowRunsGroup. handled counts the messages this instance handled.
func NewFlowRuns(sub message.Subscriber, store RunStore, handled Counter) *FlowRuns {
	return &FlowRuns{sub: sub, store: store, handled: handled}
}

// Name implements router.Wiring.
func (w *FlowRuns) Name() string { return FlowRunsGroup }

// Register implements router.Wiring.
func (w *FlowRuns) Register(r *message.Router) error {
	r.AddConsumerHandler(w.Name(), "flow:event:*", w.sub, w.handle)
	return nil
}

// handle applies one message and counts it once it is done with it
// (applied, or recognised as a duplicate).
func (w *FlowRuns) handle(msg *message.Message) error {
	if err := w.apply(msg); err != nil {
		return err
	}
	w.handled.Inc()
	return nil
}

func (w *FlowRuns) apply(msg *message.Message) error {
	m, err := stream.FromWatermill(msg)
	if err != nil {
		return err
	}
	var d struct {
		Event domain.Event `json:"event"`
	}
	if err := json.Unmarshal(m.Data, &d); err != nil {
		return fmt.Errorf("error decoding flow event %s: %w", m.EventID, err)
	}
	e := d.Event
	if e.RunID == "" {
		return nil
	}
	ctx := msg.Context()
	var run Run
	var version int64
	doc, err := w.store.GetDocument(ctx, RunsCollection, e.RunID)
	switch {
	case err == nil:
		if err := json.Unmarshal(doc.Data, &run); err != nil {
			return fmt.Errorf("error decoding run %s: %w", e.RunID, err)
		}
		version = doc.Version
	case errors.Is(err, domain.ErrNotFound):
		run = Run{RunID: e.RunID, Status: "running"}
	default:
		return err
	}
	if e.Seq <= run.LastSeq {
		return nil // a duplicate
	}
	// Events of a run reach the group's members in any order, and only
	// lifecycle events come through the stream: what lies between the last
	// applied seq and this one is read from the store, in order.
	for run.LastSeq < e.Seq-1 {
		missing, err := w.store.Read(ctx, e.Subject, domain.ReadOptions{After: run.LastSeq, Before: e.Seq, Limit: domain.MaxReadLimit})
		if err != nil {
			return err
		}
		if len(missing) == 0 {
			break
		}
		for _, m := range missing {
			ApplyRunEvent(&run, m)
		}
	}
	ApplyRunEvent(&run, e)
	body, _ := json.Marshal(run)
	_, err = w.store.SaveDocument(ctx, RunsCollection, e.RunID, body, domain.SaveOptions{ExpectedVersion: &version})
	return err
}

// ApplyRunEvent folds one lifecycle event into run.
func ApplyRunEvent(run *Run, e domain.Event) {
	run.LastSeq = e.Seq
	if e.FlowName != "" && run.FlowName == "" {
		run.FlowName = e.FlowName
	}
	ts := e.TS
	switch {
	case e.Type == "flow.start" || e.Type == "flow.started":
		run.Status = "running"
		if run.StartedAt == nil {
			run.StartedAt = &ts
		}
	case e.Type == "flow.completed":
		run.Status, run.FinishedAt = "completed", &ts
	case e.Type == "flow.failed":
		run.Status, run.FinishedAt = "failed", &ts
	case e.Type == "flow.canceled" || e.Type == "flow.cancelled":
		run.Status, run.FinishedAt = "canceled", &ts
	case e.Type == "step.started" || e.Type == "step.start":
		run.Steps.Started++
	case e.Type == "step.completed":
		run.Steps.Completed++
	case e.Type == "step.failed":
		run.Steps.Failed++
	}
}
