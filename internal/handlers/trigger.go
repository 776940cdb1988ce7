package handlers

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/nvent/nvent/internal/domain"
	"github.com/nvent/nvent/internal/stream"
)

// TriggersGroup is the competing group of the Trigger wiring.
const TriggersGroup = "triggers"

// FlowStartType is the type of the event that starts a flow run.
const FlowStartType = "flow.start"

// Appender is what the Trigger wiring needs of the store.
type Appender interface {
	Append(ctx context.Context, subject string, events []domain.NewEvent, opts domain.AppendOptions) (domain.AppendResult, error)
}

// TriggerStart is the data of a flow.start event appended for a trigger.
type TriggerStart struct {
	// Trigger is the id of the flow.trigger event, TriggerSubject its subject.
	Trigger        string `json:"trigger"`
	TriggerSubject string `json:"triggerSubject"`
	// Input is the trigger event's data.
	Input json.RawMessage `json:"input"`
}

// Trigger is the wiring that starts flows on request: it consumes the
// flow.trigger events on flow:trigger:* as a competing group (each trigger
// goes to one instance of the cluster, at least once) and, for each, appends
// a flow.start event (flowName: the trigger's; data: a TriggerStart) as the
// first event of a new run's subject nq:flow:{runId}.
//
// Each trigger event starts exactly one run, however often it is delivered
// and however many instances handle it at once: the run id is derived from
// the trigger event (TriggerRunID), and the flow.start has a fixed id
// (TriggerStartID) and expects the subject to be new, so a second append is
// an idempotent retry that the store recognises by id (a unique constraint,
// which holds across restarts) and writes nothing. A store that cannot be
// reached makes the router retry the trigger; a trigger that cannot start a
// run (no or a bad flow name, a run subject that holds other events) is
// poison after the retries.
type Trigger struct {
	sub     message.Subscriber
	store   Appender
	handled Counter
}

// NewTrigger returns the wiring; sub must be a competing subscriber of group
// TriggersGroup. handled counts the triggers this instance handled (a run
// started, or found started already).
func NewTrigger(sub message.Subscriber, store Appender, handled Counter) *Trigger {
	return &Trigger{sub: sub, store: store, handled: handled}
}

// Name implements router.Wiring.
func (w *Trigger) Name() string { return TriggersGroup }

// Register implements router.Wiring.
func (w *Trigger) Register(r *message.Router) error {
	r.AddConsumerHandler(w.Name(), "flow:trigger:*", w.sub, w.handle)
	return nil
}

// TriggerRunID returns the id of the run that the trigger event id of
// subject starts: "t-" and 32 hex digits of a SHA-256 of subject and id.
// Subject takes part because an event id is unique only within its subject;
// the hash keeps the run's subject within the name rules whatever their
// length.
func TriggerRunID(subject, id string) string {
	sum := sha256.Sum256([]byte(subject + "\x00" + id))
	return "t-" + hex.EncodeToString(sum[:16])
}

// TriggerStartID returns the event id of the flow.start of the run that
// TriggerRunID names. It is unique across subjects, like the server's ids,
// so that consumers that deduplicate stream messages by event id never
// confuse two runs' starts.
func TriggerStartID(runID string) string { return runID + ":start" }

func (w *Trigger) handle(msg *message.Message) error {
	if err := w.start(msg); err != nil {
		return err
	}
	w.handled.Inc()
	return nil
}

// start appends the flow.start of the run a trigger message asks for.
func (w *Trigger) start(msg *message.Message) error {
	m, err := stream.FromWatermill(msg)
	if err != nil {
		return err
	}
	if m.Type != TriggerType {
		return nil
	}
	var d struct {
		FlowName string       `json:"flowName"`
		Event    domain.Event `json:"event"`
	}
	if err := json.Unmarshal(m.Data, &d); err != nil {
		return domain.Wrap(domain.CodeInvalidInput, err, fmt.Sprintf("error decoding trigger %s", m.EventID))
	}
	e := d.Event
	if e.ID == "" {
		e.ID = m.EventID
	}
	if d.FlowName == "" {
		d.FlowName = e.FlowName
	}
	if d.FlowName == "" || e.Subject == "" {
		return domain.Errorf(domain.CodeInvalidInput, "trigger %s names no flow or no subject", e.ID)
	}
	input := e.Data
	if len(input) == 0 {
		input = json.RawMessage("null")
	}
	data, err := json.Marshal(TriggerStart{Trigger: e.ID, TriggerSubject: e.Subject, Input: input})
	if err != nil {
		return domain.Wrap(domain.CodeInvalidInput, err, fmt.Sprintf("error encoding the start of trigger %s", e.ID))
	}
	runID := TriggerRunID(e.Subject, e.ID)
	zero := int64(0)
	_, err = w.store.Append(msg.Context(), domain.FlowSubject(runID), []domain.NewEvent{{
		ID:       TriggerStartID(runID),
		Type:     FlowStartType,
		FlowName: d.FlowName,
		Data:     data,
	}}, domain.AppendOptions{ExpectedSeq: &zero})
	if err != nil {
		return fmt.Errorf("error starting flow %s for trigger %s: %w", d.FlowName, e.ID, err)
	}
	return nil
}
