package handlers

import (
	"sync"

	lru "github.com/hashicorp/golang-lru/v2"
)

// Verdict is what a SeqTracker makes of an event's seq.
type Verdict int

// Verdicts.
const (
	// InOrder: the next seq of its subject, or the first seen of a subject.
	InOrder Verdict = iota
	// Duplicate: at or below the last seq seen (a redelivery).
	Duplicate
	// Gap: beyond the next seq; the events between were not seen (trimmed
	// from the stream, or still on their way).
	Gap
)

// SeqTracker remembers the last seq seen per subject, for the most recently
// active subjects, and judges each new one. Safe for concurrent use.
type SeqTracker struct {
	mu   sync.Mutex
	last *lru.Cache[string, int64]
}

// NewSeqTracker tracks up to size subjects (10,000 when size <= 0).
func NewSeqTracker(size int) *SeqTracker {
	if size <= 0 {
		size = 10_000
	}
	l, _ := lru.New[string, int64](size)
	return &SeqTracker{last: l}
}

// Observe judges seq for subject and, unless it is a duplicate, records it.
func (t *SeqTracker) Observe(subject string, seq int64) Verdict {
	t.mu.Lock()
	defer t.mu.Unlock()
	last, ok := t.last.Get(subject)
	switch {
	case ok && seq <= last:
		return Duplicate
	case ok && seq > last+1:
		t.last.Add(subject, seq)
		return Gap
	}
	t.last.Add(subject, seq)
	return InOrder
}
