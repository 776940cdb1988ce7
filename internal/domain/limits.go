package domain

import "encoding/json"

// DefaultMaxEventDataBytes is the default cap on one event's data.
const DefaultMaxEventDataBytes = 256 << 10

// Limits bound what one request may ask of nvent at its edges (HTTP, the
// flows API). They may only tighten the store's own rules: a subject or key
// is never longer than MaxNameLen and a batch never holds more than
// MaxBatch events, whatever the limits say. The zero value of a field means
// its default (see DefaultLimits); Normalize fills them in.
//
// Every check fails with a *Error and changes nothing: CodeTooLarge for a
// batch or data that is too big, CodeInvalidInput for a name or page size
// beyond its limit.
type Limits struct {
	// MaxBatchEvents is the most events one append may carry (1 to MaxBatch).
	MaxBatchEvents int
	// MaxEventDataBytes caps the data of one event, measured compacted.
	MaxEventDataBytes int
	// MaxSubjectBytes caps a subject (1 to MaxNameLen).
	MaxSubjectBytes int
	// MaxKeyBytes caps a key-value key, a document collection and a
	// document id (1 to MaxNameLen).
	MaxKeyBytes int
	// MaxPageSize caps the limit= of one page of documents or runs (1 to
	// MaxListLimit).
	MaxPageSize int
}

// DefaultLimits returns the limits nvent runs with when none are set.
func DefaultLimits() Limits {
	return Limits{
		MaxBatchEvents:    MaxBatch,
		MaxEventDataBytes: DefaultMaxEventDataBytes,
		MaxSubjectBytes:   MaxNameLen,
		MaxKeyBytes:       MaxNameLen,
		MaxPageSize:       MaxListLimit,
	}
}

// Normalize fills in the defaults of unset (zero or negative) fields.
func (l Limits) Normalize() Limits {
	d := DefaultLimits()
	if l.MaxBatchEvents <= 0 {
		l.MaxBatchEvents = d.MaxBatchEvents
	}
	if l.MaxEventDataBytes <= 0 {
		l.MaxEventDataBytes = d.MaxEventDataBytes
	}
	if l.MaxSubjectBytes <= 0 {
		l.MaxSubjectBytes = d.MaxSubjectBytes
	}
	if l.MaxKeyBytes <= 0 {
		l.MaxKeyBytes = d.MaxKeyBytes
	}
	if l.MaxPageSize <= 0 {
		l.MaxPageSize = d.MaxPageSize
	}
	return l
}

// Validate reports a limit that is beyond what the store allows.
func (l Limits) Validate() error {
	switch {
	case l.MaxBatchEvents > MaxBatch:
		return Errorf(CodeInvalidInput, "max batch events %d is above the store's limit of %d", l.MaxBatchEvents, MaxBatch)
	case l.MaxSubjectBytes > MaxNameLen:
		return Errorf(CodeInvalidInput, "max subject bytes %d is above the store's limit of %d", l.MaxSubjectBytes, MaxNameLen)
	case l.MaxKeyBytes > MaxNameLen:
		return Errorf(CodeInvalidInput, "max key bytes %d is above the store's limit of %d", l.MaxKeyBytes, MaxNameLen)
	case l.MaxPageSize > MaxListLimit:
		return Errorf(CodeInvalidInput, "max page size %d is above the store's limit of %d", l.MaxPageSize, MaxListLimit)
	}
	return nil
}

// CheckSubject fails with invalid_input when subject is longer than
// MaxSubjectBytes. (Its characters are the store's to check.)
func (l Limits) CheckSubject(subject string) error {
	return checkLen("subject", subject, l.Normalize().MaxSubjectBytes)
}

// CheckKey fails with invalid_input when name, a key, collection or
// document id (kind says which), is longer than MaxKeyBytes.
func (l Limits) CheckKey(kind, name string) error {
	return checkLen(kind, name, l.Normalize().MaxKeyBytes)
}

func checkLen(kind, s string, max int) error {
	if len(s) > max {
		return Errorf(CodeInvalidInput, "%s is %d bytes long; the limit is %d", kind, len(s), max)
	}
	return nil
}

// CheckEvents fails with too_large when events holds more than
// MaxBatchEvents events or an event whose data, compacted, is longer than
// MaxEventDataBytes.
func (l Limits) CheckEvents(events []NewEvent) error {
	l = l.Normalize()
	if len(events) > l.MaxBatchEvents {
		return Errorf(CodeTooLarge, "%d events in one append; the limit is %d", len(events), l.MaxBatchEvents)
	}
	for i, e := range events {
		if err := l.CheckEventData(e.Data); err != nil {
			if len(events) == 1 {
				return err
			}
			return Errorf(CodeTooLarge, "event %d: %s", i, err.Error())
		}
	}
	return nil
}

// CheckEventData fails with too_large when data, compacted, is longer than
// MaxEventDataBytes, and with invalid_input when data longer than that is
// not valid JSON (shorter data is left for the store to check).
func (l Limits) CheckEventData(data json.RawMessage) error {
	max := l.Normalize().MaxEventDataBytes
	if len(data) <= max {
		return nil // compacting never makes it longer
	}
	compact, err := CompactJSON(data)
	if err != nil {
		return err
	}
	if len(compact) > max {
		return Errorf(CodeTooLarge, "event data is %d bytes long; the limit is %d", len(compact), max)
	}
	return nil
}

// CheckPageSize fails with invalid_input when a page of n items is asked
// for beyond MaxPageSize (0 asks for the default page).
func (l Limits) CheckPageSize(n int) error {
	max := l.Normalize().MaxPageSize
	if n > max {
		return Errorf(CodeInvalidInput, "limit %d is above the largest page, %d", n, max)
	}
	return nil
}
