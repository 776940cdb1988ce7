package domain

import (
	"bytes"
	"encoding/json"
	"time"

	"github.com/google/uuid"
)

// TimeLayout is how every timestamp leaves nvent: RFC 3339, milliseconds, UTC.
const TimeLayout = "2006-01-02T15:04:05.000Z07:00"

// Now returns the current time as nvent stores it: UTC, truncated to the
// millisecond, so that what an adapter returns equals what it was given.
func Now() time.Time { return time.Now().UTC().Truncate(time.Millisecond) }

// FormatTime renders t in TimeLayout (UTC, milliseconds).
func FormatTime(t time.Time) string { return t.UTC().Format(TimeLayout) }

// NewID returns a fresh, time-ordered unique id (UUIDv7).
func NewID() string { return uuid.Must(uuid.NewV7()).String() }

// Event is one stored event. Seq is its version within Subject: 1, 2, 3 …
// with no gaps. TS is when it was stored (UTC, millisecond precision).
type Event struct {
	ID       string          `json:"id"`
	Subject  string          `json:"subject"`
	Seq      int64           `json:"seq"`
	Type     string          `json:"type"`
	RunID    string          `json:"runId,omitempty"`
	FlowName string          `json:"flowName,omitempty"`
	StepName string          `json:"stepName,omitempty"`
	StepID   string          `json:"stepId,omitempty"`
	Attempt  int             `json:"attempt,omitempty"`
	Data     json.RawMessage `json:"data"`
	TS       time.Time       `json:"ts"`
}

type eventJSON Event

// MarshalJSON writes ts in TimeLayout and data as null when empty.
func (e Event) MarshalJSON() ([]byte, error) {
	if len(e.Data) == 0 {
		e.Data = json.RawMessage("null")
	}
	return json.Marshal(struct {
		eventJSON
		TS string `json:"ts"`
	}{eventJSON(e), FormatTime(e.TS)})
}

// NewEvent is an event as a client proposes it: the store fills in Subject,
// Seq, TS, and ID when it is empty.
type NewEvent struct {
	ID       string          `json:"id,omitempty"`
	Type     string          `json:"type"`
	RunID    string          `json:"runId,omitempty"`
	FlowName string          `json:"flowName,omitempty"`
	StepName string          `json:"stepName,omitempty"`
	StepID   string          `json:"stepId,omitempty"`
	Attempt  int             `json:"attempt,omitempty"`
	Data     json.RawMessage `json:"data,omitempty"`
}

// MaxBatch is the most events one Append call takes.
const MaxBatch = 1000

// PrepareAppend validates a batch for subject and returns it completed the
// way every store adapter stores it: ids made where missing, runId defaulted
// from a flow subject, data compacted (null when absent), all stamped with
// one timestamp. Seq is left for the adapter. It changes nothing on error.
func PrepareAppend(subject string, in []NewEvent) ([]Event, error) {
	if err := ValidateSubject(subject); err != nil {
		return nil, err
	}
	if len(in) == 0 {
		return nil, Errorf(CodeInvalidInput, "no events to append")
	}
	if len(in) > MaxBatch {
		return nil, Errorf(CodeTooLarge, "%d events in one append; the limit is %d", len(in), MaxBatch)
	}
	now := Now()
	runID := RunIDFromSubject(subject)
	seen := make(map[string]struct{}, len(in))
	out := make([]Event, len(in))
	for i, ne := range in {
		e := Event{
			ID: ne.ID, Subject: subject, Type: ne.Type, RunID: ne.RunID,
			FlowName: ne.FlowName, StepName: ne.StepName, StepID: ne.StepID,
			Attempt: ne.Attempt, TS: now,
		}
		if e.ID == "" {
			e.ID = NewID()
		} else if err := ValidateEventID(e.ID); err != nil {
			return nil, err
		}
		if _, dup := seen[e.ID]; dup {
			return nil, Errorf(CodeInvalidInput, "event id %q appears twice in one batch", e.ID)
		}
		seen[e.ID] = struct{}{}
		if err := ValidateEventType(e.Type); err != nil {
			return nil, err
		}
		for _, f := range []struct{ name, v string }{{"runId", e.RunID}, {"flowName", e.FlowName}, {"stepName", e.StepName}, {"stepId", e.StepID}} {
			if f.v != "" {
				if err := validateName(f.name, f.v, MaxNameLen); err != nil {
					return nil, err
				}
			}
		}
		if e.Attempt < 0 {
			return nil, Errorf(CodeInvalidInput, "attempt must not be negative")
		}
		if e.RunID == "" {
			e.RunID = runID
		}
		data, err := CompactJSON(ne.Data)
		if err != nil {
			return nil, err
		}
		e.Data = data
		out[i] = e
	}
	return out, nil
}

// CompactJSON validates raw as JSON and returns it without insignificant
// white space; empty input becomes null.
func CompactJSON(raw json.RawMessage) (json.RawMessage, error) {
	if len(bytes.TrimSpace(raw)) == 0 {
		return json.RawMessage("null"), nil
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return nil, Wrap(CodeInvalidInput, err, "data is not valid JSON")
	}
	return json.RawMessage(buf.Bytes()), nil
}

// Order is the direction of a read.
type Order string

// Read orders.
const (
	Asc  Order = "asc"
	Desc Order = "desc"
)

// DefaultReadLimit and MaxReadLimit bound one read.
const (
	DefaultReadLimit = 100
	MaxReadLimit     = 1000
)

// ReadOptions select events of one subject. After and Before are exclusive
// seq bounds (0 means unbounded); Types keeps only those types; Limit caps
// the result (0 means DefaultReadLimit); Desc returns the newest first.
type ReadOptions struct {
	After  int64
	Before int64
	Limit  int
	Types  []string
	Order  Order
}

// Normalize validates o and fills in defaults.
func (o ReadOptions) Normalize() (ReadOptions, error) {
	if o.After < 0 || o.Before < 0 {
		return o, Errorf(CodeInvalidInput, "after and before must not be negative")
	}
	if o.Limit < 0 {
		return o, Errorf(CodeInvalidInput, "limit must not be negative")
	}
	if o.Limit == 0 {
		o.Limit = DefaultReadLimit
	}
	if o.Limit > MaxReadLimit {
		o.Limit = MaxReadLimit
	}
	switch o.Order {
	case "":
		o.Order = Asc
	case Asc, Desc:
	default:
		return o, Errorf(CodeInvalidInput, "order must be asc or desc, not %q", o.Order)
	}
	for _, t := range o.Types {
		if err := ValidateEventType(t); err != nil {
			return o, err
		}
	}
	return o, nil
}

// AppendOptions control an append. ExpectedSeq, when set, is the seq the
// subject must be at (0: the subject has no events yet) for anything to be
// written.
type AppendOptions struct {
	ExpectedSeq *int64
}

// AppendResult is what an append returns.
type AppendResult struct {
	// Events holds one stored event per event given, in the order given.
	// An event whose id the subject already held is returned as stored.
	Events []Event
	// PreviousSeq is the subject's seq before this append; the events this
	// append wrote are those with a greater Seq.
	PreviousSeq int64
}

// Appended returns the events this append wrote (not the duplicates).
func (r AppendResult) Appended() []Event {
	var out []Event
	for _, e := range r.Events {
		if e.Seq > r.PreviousSeq {
			out = append(out, e)
		}
	}
	return out
}
