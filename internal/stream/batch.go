package stream

import (
	"context"
	"fmt"
	"sync"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/nvent/nvent/internal/domain"
)

// DefaultBatchLimit is how many messages a Batch holds before a Publish
// writes them itself.
const DefaultBatchLimit = 1000

// batchWriter is a writer that can write the entries of several physical
// streams in one round trip (Redis: a pipeline of XADDs). Writers without
// it get one write per run of entries of the same stream.
type batchWriter interface {
	writeBatch(entries []queuedEntry) error
}

// queuedEntry is one wire message waiting in a Batch for its stream.
type queuedEntry struct {
	stream string
	wire   *message.Message
}

// Batch is a message.Publisher that queues messages and writes them with
// the Publisher's backend on Flush, in the order they were published, in as
// few round trips as the backend allows (one for Redis). It lets a handler
// acknowledge a bus message before the stream has it, provided the
// producer of the bus messages calls Flush — and only then counts them as
// delivered (the relay checkpoints after Flush returns nil).
//
// Publish writes the queue itself when it holds limit messages, so the queue
// stays bounded even without Flush; a Publish that does so returns the
// write's error, and then its own messages are not queued (the caller
// publishes them again). A write that fails keeps the rest of the queue: the
// next Flush (or Publish at the limit) writes it again, so messages may
// reach the stream twice (consumers deduplicate by event id) but are never
// dropped or reordered.
//
// A Batch is safe for concurrent use.
type Batch struct {
	p     *Publisher
	limit int

	mu    sync.Mutex
	queue []queuedEntry
}

// NewBatch returns a Batch over p that holds at most limit messages
// (DefaultBatchLimit when limit ≤ 0).
func NewBatch(p *Publisher, limit int) *Batch {
	if limit <= 0 {
		limit = DefaultBatchLimit
	}
	return &Batch{p: p, limit: limit}
}

// Publish queues msgs for topic. It fails at once for a pattern or an
// invalid topic, and when it had to write a full queue and could not.
func (b *Batch) Publish(topic string, msgs ...*message.Message) error {
	stream, err := b.p.cfg.Layout.StreamFor(topic)
	if err != nil {
		return err
	}
	now := domain.Now()
	entries := make([]queuedEntry, len(msgs))
	for i, msg := range msgs {
		wire, err := encodeEntry(topic, msg, b.p.cfg.InstanceID, now)
		if err != nil {
			return err
		}
		entries[i] = queuedEntry{stream: stream, wire: wire}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	before := len(b.queue)
	b.queue = append(b.queue, entries...)
	if len(b.queue) < b.limit {
		return nil
	}
	if err := b.flushLocked(); err != nil {
		// The caller learns that these messages were not taken and will
		// publish them again: keep only what was queued before them, so
		// that retries do not grow the queue.
		clear(b.queue[before:])
		b.queue = b.queue[:before]
		return err
	}
	return nil
}

// Flush writes every queued message and returns once the backend stored
// them all, or the first error (the queue is then kept). ctx is not passed
// to the backend's write; it is checked before writing.
func (b *Batch) Flush(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.flushLocked()
}

// Pending reports how many messages wait for Flush.
func (b *Batch) Pending() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.queue)
}

func (b *Batch) flushLocked() error {
	if len(b.queue) == 0 {
		return nil
	}
	if err := b.p.writeBatch(b.queue); err != nil {
		return fmt.Errorf("error publishing %d queued messages: %w", len(b.queue), err)
	}
	clear(b.queue)
	b.queue = b.queue[:0]
	return nil
}

// Close does nothing: the Batch borrows its Publisher. Flush first.
func (b *Batch) Close() error { return nil }

// writeBatch writes entries in order through the Publisher's writer.
func (p *Publisher) writeBatch(entries []queuedEntry) error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return fmt.Errorf("publisher %w", errClosed)
	}
	if bw, ok := p.w.(batchWriter); ok {
		return bw.writeBatch(entries)
	}
	for i := 0; i < len(entries); {
		j := i + 1
		for j < len(entries) && entries[j].stream == entries[i].stream {
			j++
		}
		wire := make([]*message.Message, 0, j-i)
		for _, e := range entries[i:j] {
			wire = append(wire, e.wire)
		}
		if err := p.w.write(entries[i].stream, wire...); err != nil {
			return err
		}
		i = j
	}
	return nil
}
