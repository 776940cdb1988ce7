// Package bus is nvent's in-process event bus: a Watermill GoChannel on
// which every store change travels, once, from whatever produced it (the
// store's after-commit publisher, later the durable relay) to the router
// handlers ("wirings") that route it onwards.
//
// Every change is one message on Topic. Its UUID is the change id (the event
// id for appends), so that every consumer downstream can deduplicate. The
// bus is configured to block Publish until every subscribed handler has
// acknowledged the message: that keeps per-subject order (GoChannel without
// it hands each message to a goroutine of its own) and gives the producer
// back-pressure.
package bus

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"

	"github.com/nvent/nvent/internal/domain"
)

// Topic carries every store change.
const Topic = "nvent.changes"

// Kind says what a change did.
type Kind string

// The kinds of change.
const (
	KindAppend    Kind = "append"    // events appended to a subject
	KindSave      Kind = "save"      // a document created or replaced
	KindDelete    Kind = "delete"    // a document deleted
	KindKeySet    Kind = "kv.set"    // a key set or incremented
	KindKeyDelete Kind = "kv.delete" // a key deleted
)

// Change is one store change as it travels on the bus.
type Change struct {
	Kind Kind `json:"kind"`
	// ID identifies the change: the event id for appends, a fresh id for
	// the others. It is the Watermill message UUID.
	ID string `json:"id"`
	// Event is set for KindAppend.
	Event *domain.Event `json:"event,omitempty"`
	// Document is set for KindSave.
	Document *domain.Document `json:"document,omitempty"`
	// Collection and DocumentID are set for KindSave and KindDelete.
	Collection string `json:"collection,omitempty"`
	DocumentID string `json:"documentId,omitempty"`
	// Key is set for the kv kinds; Entry for KindKeySet.
	Key   string          `json:"key,omitempty"`
	Entry *domain.KVEntry `json:"entry,omitempty"`
	// At is when the change was made.
	At time.Time `json:"at"`
	// CorrelationID is the id of the request that made the change, if any;
	// it also travels as the message's MetadataCorrelationID.
	CorrelationID string `json:"correlationId,omitempty"`
}

// MetadataCorrelationID is the metadata key of the correlation id, on the
// bus and on the stream.
const MetadataCorrelationID = "correlation_id"

// Message encodes c as a bus message.
func (c Change) Message() (*message.Message, error) {
	b, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("error encoding change %s: %w", c.ID, err)
	}
	msg := message.NewMessage(c.ID, b)
	msg.Metadata.Set("kind", string(c.Kind))
	if c.CorrelationID != "" {
		msg.Metadata.Set(MetadataCorrelationID, c.CorrelationID)
	}
	return msg, nil
}

// Decode reads a change from a bus message.
func Decode(msg *message.Message) (Change, error) {
	var c Change
	if err := json.Unmarshal(msg.Payload, &c); err != nil {
		return Change{}, domain.Wrap(domain.CodeInvalidInput, err, "bus message "+msg.UUID+" is not a change")
	}
	return c, nil
}

// Bus is the in-process Pub/Sub: a GoChannel, plus the Flushers of the
// handlers that acknowledge a message before their output is durable.
//
// A producer that must know that its messages went all the way (the relay,
// before it checkpoints) calls Flush after Publish returned: Publish alone
// means that every handler acknowledged every message; Flush then means
// that what the handlers queued is stored too.
type Bus struct {
	*gochannel.GoChannel

	mu       sync.Mutex
	flushers []Flusher
}

// Flusher is a handler's stage that queues its output and makes it
// durable on Flush (stream.Batch).
type Flusher interface {
	Flush(ctx context.Context) error
}

// New returns a bus and a cleanup that closes it.
func New(logger watermill.LoggerAdapter) (*Bus, func(), error) {
	b := &Bus{GoChannel: gochannel.NewGoChannel(gochannel.Config{
		OutputChannelBuffer:            256,
		BlockPublishUntilSubscriberAck: true,
	}, logger)}
	return b, func() { _ = b.Close() }, nil
}

// AddFlusher makes Flush flush f too.
func (b *Bus) AddFlusher(f Flusher) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.flushers = append(b.flushers, f)
}

// Flush flushes every Flusher, in the order they were added, and returns
// the first error.
func (b *Bus) Flush(ctx context.Context) error {
	b.mu.Lock()
	fs := slices.Clone(b.flushers)
	b.mu.Unlock()
	for _, f := range fs {
		if err := f.Flush(ctx); err != nil {
			return err
		}
	}
	return nil
}
