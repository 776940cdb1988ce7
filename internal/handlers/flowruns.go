package handlers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
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
	// LastSeq is the seq of the run's last lifecycle event applied (see
	// RunFold): events at or below it are applied already, and a redelivery
	// of one changes nothing.
	LastSeq int64 `json:"lastSeq"`
	Steps   struct {
		Started   int `json:"started"`
		Completed int `json:"completed"`
		Failed    int `json:"failed"`
	} `json:"steps"`
}

// MarshalJSON writes the run with its times in domain.TimeLayout (RFC 3339,
// milliseconds, UTC), as every timestamp leaves nvent.
func (r Run) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		RunID      string  `json:"runId"`
		FlowName   string  `json:"flowName,omitempty"`
		Status     string  `json:"status"`
		StartedAt  *string `json:"startedAt,omitempty"`
		FinishedAt *string `json:"finishedAt,omitempty"`
		LastSeq    int64   `json:"lastSeq"`
		Steps      any     `json:"steps"`
	}{r.RunID, r.FlowName, r.Status, formatTimePtr(r.StartedAt), formatTimePtr(r.FinishedAt), r.LastSeq, r.Steps})
}

func formatTimePtr(t *time.Time) *string {
	if t == nil {
		return nil
	}
	s := domain.FormatTime(*t)
	return &s
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
// and optimistic (a concurrent update of the run is a conflict, after which
// the event is applied again to the run as it is then).
//
// The document is the fold of the run's events (RunFold) up to its last
// lifecycle event. Only lifecycle events come through the stream, and an
// instance may lag behind it: to apply an event, FlowRuns reads the run's
// events from the store, from the document's seq to the newest, and applies
// them all in one save. The messages of the events it applied ahead of
// their delivery are duplicates when they come, so an instance that fell
// behind catches up in bulk, and a gap (trimmed from the stream, or
// handled by another instance that has not saved yet) is filled from the
// store, the source of truth.
//
// Each time applying events changes a run's status — its creation as
// running included — FlowRuns publishes a RunStatusType message on
// RunStatusTopic (client:ui:runs) whose data is the run as it was right
// after that change. The message is published before the run document is
// saved, so a crash or a conflict between the two makes the change be
// published again, never lost: delivery is at least once, and the message's
// event id, "{runId}:{status}:{seq}" (seq: the event that made the change),
// is the same on every publication of one change, for consumers to drop
// duplicates. A publish that fails is an unavailable stream: the router
// retries the event until the stream takes it.
type FlowRuns struct {
	sub     message.Subscriber
	store   RunStore
	pub     message.Publisher
	handled Counter
}

// FlowRunsGroup is the competing group of the FlowRuns wiring.
const FlowRunsGroup = "flow-runs"

// RunStatusTopic carries run status changes for UIs; RunStatusType is the
// type of its messages.
const (
	RunStatusTopic = "client:ui:runs"
	RunStatusType  = "run.status"
)

// NewFlowRuns returns the wiring; sub must be a competing subscriber of
// group FlowRunsGroup. pub publishes the run status messages; nil publishes
// none (for when the client-messages channel is off). handled counts the
// messages this instance handled.
func NewFlowRuns(sub message.Subscriber, store RunStore, pub message.Publisher, handled Counter) *FlowRuns {
	return &FlowRuns{sub: sub, store: store, pub: pub, handled: handled}
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

// conflictAttempts is how often FlowRuns applies an event again, at once,
// after a concurrent update of its run, before it leaves the retries to the
// router (which backs off).
const conflictAttempts = 4

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
	for attempt := 1; ; attempt++ {
		err := w.applyEvent(msg.Context(), e)
		if err == nil || !errors.Is(err, domain.ErrConflict) || attempt == conflictAttempts {
			return err
		}
	}
}

// applyEvent brings the run of e up to date with the store, if e is not
// applied yet, in one optimistic save.
func (w *FlowRuns) applyEvent(ctx context.Context, e domain.Event) error {
	var fold *RunFold
	var version int64
	doc, err := w.store.GetDocument(ctx, RunsCollection, e.RunID)
	switch {
	case err == nil:
		var run Run
		if err := json.Unmarshal(doc.Data, &run); err != nil {
			return fmt.Errorf("error decoding run %s: %w", e.RunID, err)
		}
		fold, version = ResumeRunFold(run), doc.Version
	case errors.Is(err, domain.ErrNotFound):
		fold = NewRunFold(e.RunID)
	default:
		return err
	}
	if e.Seq <= fold.LastSeq() {
		return nil // a duplicate, or applied ahead of its delivery
	}
	for {
		evs, err := w.store.Read(ctx, e.Subject, domain.ReadOptions{After: fold.LastSeq(), Limit: domain.MaxReadLimit})
		if err != nil {
			return err
		}
		for _, ev := range evs {
			fold.Apply(ev)
		}
		if len(evs) < domain.MaxReadLimit {
			break
		}
	}
	if fold.LastSeq() < e.Seq {
		// The store did not return e, which it committed before e was
		// published: apply e as delivered.
		fold.Apply(e)
	}
	run, ok := fold.Run()
	if !ok || run.LastSeq <= fold.start {
		return nil // no lifecycle event of this run to apply
	}
	if err := w.publishChanges(fold.Changes()); err != nil {
		return err
	}
	body, _ := json.Marshal(run)
	_, err = w.store.SaveDocument(ctx, RunsCollection, e.RunID, body, domain.SaveOptions{ExpectedVersion: &version})
	return err
}

// publishChanges publishes one RunStatusType message per status change, in
// order, each identified by "{runId}:{status}:{seq}" and stamped with the
// time of the event that made the change.
func (w *FlowRuns) publishChanges(changes []StatusChange) error {
	if w.pub == nil {
		return nil
	}
	for _, c := range changes {
		run := c.Run
		data, err := json.Marshal(run)
		if err != nil {
			return fmt.Errorf("error encoding run %s: %w", run.RunID, err)
		}
		m := stream.Message{
			Type:      RunStatusType,
			Data:      data,
			EventID:   run.RunID + ":" + run.Status + ":" + strconv.FormatInt(run.LastSeq, 10),
			Timestamp: c.At,
		}
		if err := w.pub.Publish(RunStatusTopic, stream.NewWatermillMessage(m)); err != nil {
			return domain.Wrap(domain.CodeUnavailable, err, fmt.Sprintf("error publishing status %s of run %s", run.Status, run.RunID))
		}
	}
	return nil
}

// RunFold folds the events of one run's subject, in seq order, into the Run
// that the flow-runs wiring keeps: the run as it was right after the last
// lifecycle event of the run (IsFlowLifecycle, with the run's id) — events
// after that one are not part of it yet. GET /v1/runs/{runId} and the run
// document are both this fold, so they agree. It records the status
// changes on the way.
type RunFold struct {
	current Run
	last    *Run   // after the last lifecycle event; nil before one
	start   int64  // the seq the fold started after
	status  string // the status before the first applied event; "" for a new run
	changes []StatusChange
}

// StatusChange is a run right after its status changed, and the time of the
// event that changed it.
type StatusChange struct {
	Run Run
	At  time.Time
}

// NewRunFold starts the fold of a run with no events applied yet.
func NewRunFold(runID string) *RunFold {
	return &RunFold{current: Run{RunID: runID, Status: "running"}}
}

// ResumeRunFold continues the fold of a run already folded up to
// run.LastSeq (a run document).
func ResumeRunFold(run Run) *RunFold {
	last := run
	return &RunFold{current: run, last: &last, start: run.LastSeq, status: run.Status}
}

// Apply folds e, the next event of the run's subject.
func (f *RunFold) Apply(e domain.Event) {
	ApplyRunEvent(&f.current, e)
	if f.current.Status != f.status {
		f.status = f.current.Status
		f.changes = append(f.changes, StatusChange{Run: f.current, At: e.TS})
	}
	if e.RunID == f.current.RunID && IsFlowLifecycle(e.Type) {
		last := f.current
		f.last = &last
	}
}

// LastSeq is the seq of the last event applied.
func (f *RunFold) LastSeq() int64 { return f.current.LastSeq }

// Run returns the run as of its last lifecycle event, and false when no
// lifecycle event of the run has been applied (or resumed from).
func (f *RunFold) Run() (Run, bool) {
	if f.last == nil {
		return Run{}, false
	}
	return *f.last, true
}

// Changes returns the status changes up to the run's last lifecycle event,
// in order.
func (f *RunFold) Changes() []StatusChange {
	run, ok := f.Run()
	if !ok {
		return nil
	}
	var out []StatusChange
	for _, c := range f.changes {
		if c.Run.LastSeq <= run.LastSeq {
			out = append(out, c)
		}
	}
	return out
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
