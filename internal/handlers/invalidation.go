package handlers

import (
	"encoding/json"
	"fmt"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/nvent/nvent/internal/stream"
)

// Invalidator drops cached entries; *cache.Store is one.
type Invalidator interface {
	InvalidateDocument(collection, id string)
	InvalidateKey(key string)
}

// StoreSyncCounters count what the CacheInvalidation wiring receives.
type StoreSyncCounters struct {
	// Received counts every store-sync message, this instance's own included;
	// Appends those of them that carry an appended event.
	Received, Appends Counter
	// Gaps counts appends that arrived with events of their subject missing
	// before them; Duplicates those that arrived again.
	Gaps, Duplicates Counter
	// Invalidations counts entries dropped for other instances' changes.
	Invalidations Counter
}

// CacheInvalidation is the wiring that keeps this instance's read cache
// honest: it reads every store-sync message (broadcast, so every instance
// sees every change) and drops the documents and keys they name. It does
// not skip messages stamped with its own instance id: with the durable relay
// a message is stamped by the instance that relayed it, not by the one that
// wrote, so "own" messages include other instances' writes. Dropping an
// entry this instance already dropped when it wrote costs one cache miss.
// It also watches the per-subject seq of appends and counts gaps and
// duplicates.
type CacheInvalidation struct {
	sub      message.Subscriber
	cache    Invalidator
	seqs     *SeqTracker
	counters StoreSyncCounters
}

// NewCacheInvalidation returns the wiring; sub must be a broadcast
// subscriber of the stream.
func NewCacheInvalidation(sub message.Subscriber, cache Invalidator, counters StoreSyncCounters) *CacheInvalidation {
	return &CacheInvalidation{sub: sub, cache: cache, seqs: NewSeqTracker(0), counters: counters}
}

// Name implements router.Wiring.
func (w *CacheInvalidation) Name() string { return "cache-invalidation" }

// Register implements router.Wiring.
func (w *CacheInvalidation) Register(r *message.Router) error {
	r.AddConsumerHandler(w.Name(), "store-sync:*", w.sub, w.handle)
	return nil
}

func (w *CacheInvalidation) handle(msg *message.Message) error {
	m, err := stream.FromWatermill(msg)
	if err != nil {
		return err
	}
	w.counters.Received.Inc()
	var d struct {
		Collection string `json:"collection"`
		ID         string `json:"id"`
		Key        string `json:"key"`
		Subject    string `json:"subject"`
		Event      struct {
			Seq int64 `json:"seq"`
		} `json:"event"`
	}
	if err := json.Unmarshal(m.Data, &d); err != nil {
		return fmt.Errorf("error decoding %s message %s: %w", m.Type, m.EventID, err)
	}
	if m.Type == "store.append" {
		w.counters.Appends.Inc()
		switch w.seqs.Observe(d.Subject, d.Event.Seq) {
		case Gap:
			w.counters.Gaps.Inc()
		case Duplicate:
			w.counters.Duplicates.Inc()
		}
		return nil
	}
	switch m.Type {
	case "store.save", "store.delete":
		w.cache.InvalidateDocument(d.Collection, d.ID)
	case "store.kv":
		w.cache.InvalidateKey(d.Key)
	default:
		return nil
	}
	w.counters.Invalidations.Inc()
	return nil
}
