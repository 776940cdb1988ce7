// Package feed puts every store change on the bus. Store wraps a
// storage.Store and, after each write commits, publishes the change (see
// package bus). It is the one seam between pure storage and streaming: the
// adapters know nothing of it, and a durable relay that reads committed
// changes from the database can take its place without touching them.
//
// The feed is for the stores that live in one process (memory, SQLite);
// Postgres uses the durable relay instead (package relay), which reads
// committed changes from the database itself.
//
// Changes are queued in commit order and published by Run, so a write
// never waits for the stream; appends to one subject are queued under a
// lock for that subject, so they are published in seq order. When the
// stream is down the queue fills (QueueSize changes) and then writes wait
// for room. Publishing after the commit leaves a window: what is still
// queued when the process dies or stops is not published (the store keeps
// the changes themselves).
package feed

import (
	"context"
	"encoding/json"
	"hash/maphash"
	"log/slog"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/nvent/nvent/internal/bus"
	"github.com/nvent/nvent/internal/domain"
	"github.com/nvent/nvent/internal/storage"
)

// stripes is how many locks subjects are spread over.
const stripes = 256

// QueueSize is how many writes' changes wait for the bus at most.
const QueueSize = 4096

// Store is a storage.Store that publishes its changes on the bus. Reads go
// straight to the wrapped store.
type Store struct {
	storage.Store
	pub   message.Publisher
	log   *slog.Logger
	ready <-chan struct{}
	queue chan []*message.Message
	seed  maphash.Seed
	locks [stripes]sync.Mutex
}

// New wraps inner so that its changes are published through pub on
// bus.Topic by Run, once ready is closed (the bus's handlers are
// subscribed).
func New(inner storage.Store, pub message.Publisher, log *slog.Logger, ready <-chan struct{}) *Store {
	return &Store{Store: inner, pub: pub, log: log, ready: ready, queue: make(chan []*message.Message, QueueSize), seed: maphash.MakeSeed()}
}

// Run publishes queued changes, in order, until ctx ends.
func (s *Store) Run(ctx context.Context) error {
	select {
	case <-s.ready:
	case <-ctx.Done():
		return nil
	}
	for {
		select {
		case <-ctx.Done():
			if n := len(s.queue); n > 0 {
				s.log.Warn("stopping with changes not yet published", slog.Int("writes", n))
			}
			return nil
		case msgs := <-s.queue:
			if err := s.pub.Publish(bus.Topic, msgs...); err != nil {
				s.log.Error("changes committed but not published", slog.Int("count", len(msgs)), slog.Any("error", err))
				continue
			}
			// Handlers that batch their stream writes acknowledged the
			// messages before writing them: make them write now, while
			// the queue gives the next writes time to gather.
			if f, ok := s.pub.(interface{ Flush(context.Context) error }); ok {
				if err := f.Flush(ctx); err != nil {
					s.log.Error("changes committed but not written to the stream", slog.Int("count", len(msgs)), slog.Any("error", err))
				}
			}
		}
	}
}

// publish queues changes; a failure is logged, not returned: the write has
// committed and the caller must learn that it did.
func (s *Store) publish(ctx context.Context, changes ...bus.Change) {
	msgs := make([]*message.Message, 0, len(changes))
	for _, c := range changes {
		c.CorrelationID = domain.CorrelationID(ctx)
		msg, err := c.Message()
		if err != nil {
			s.log.ErrorContext(ctx, "change not published", slog.String("change", c.ID), slog.Any("error", err))
			continue
		}
		msgs = append(msgs, msg)
	}
	select {
	case s.queue <- msgs:
	case <-ctx.Done():
		s.log.ErrorContext(ctx, "changes committed but not queued: the request ended while the queue was full", slog.Int("count", len(msgs)))
	}
}

// Append implements storage.Store and publishes the events it wrote, in seq
// order.
func (s *Store) Append(ctx context.Context, subject string, events []domain.NewEvent, opts domain.AppendOptions) (domain.AppendResult, error) {
	mu := &s.locks[maphash.String(s.seed, subject)%stripes]
	mu.Lock()
	defer mu.Unlock()
	res, err := s.Store.Append(ctx, subject, events, opts)
	if err != nil {
		return res, err
	}
	appended := res.Appended()
	changes := make([]bus.Change, len(appended))
	for i := range appended {
		changes[i] = bus.Change{Kind: bus.KindAppend, ID: appended[i].ID, Event: &appended[i], At: appended[i].TS}
	}
	if len(changes) > 0 {
		s.publish(ctx, changes...)
	}
	return res, nil
}

// SaveDocument implements storage.Store and publishes the save.
func (s *Store) SaveDocument(ctx context.Context, collection, id string, data json.RawMessage, opts domain.SaveOptions) (domain.Document, error) {
	d, err := s.Store.SaveDocument(ctx, collection, id, data, opts)
	if err == nil {
		s.publish(ctx, bus.Change{Kind: bus.KindSave, ID: domain.NewID(), Document: &d, Collection: collection, DocumentID: id, At: d.UpdatedAt})
	}
	return d, err
}

// DeleteDocument implements storage.Store and publishes the deletion.
func (s *Store) DeleteDocument(ctx context.Context, collection, id string, opts domain.SaveOptions) error {
	err := s.Store.DeleteDocument(ctx, collection, id, opts)
	if err == nil {
		s.publish(ctx, bus.Change{Kind: bus.KindDelete, ID: domain.NewID(), Collection: collection, DocumentID: id, At: domain.Now()})
	}
	return err
}

// SetKey implements storage.Store and publishes the new entry.
func (s *Store) SetKey(ctx context.Context, key string, value json.RawMessage, ttl time.Duration) (domain.KVEntry, error) {
	e, err := s.Store.SetKey(ctx, key, value, ttl)
	if err == nil {
		s.publish(ctx, bus.Change{Kind: bus.KindKeySet, ID: domain.NewID(), Key: key, Entry: &e, At: domain.Now()})
	}
	return e, err
}

// IncrKey implements storage.Store and publishes the new entry.
func (s *Store) IncrKey(ctx context.Context, key string, delta int64) (domain.KVEntry, error) {
	e, err := s.Store.IncrKey(ctx, key, delta)
	if err == nil {
		s.publish(ctx, bus.Change{Kind: bus.KindKeySet, ID: domain.NewID(), Key: key, Entry: &e, At: domain.Now()})
	}
	return e, err
}

// DeleteKey implements storage.Store and publishes the deletion.
func (s *Store) DeleteKey(ctx context.Context, key string) error {
	err := s.Store.DeleteKey(ctx, key)
	if err == nil {
		s.publish(ctx, bus.Change{Kind: bus.KindKeyDelete, ID: domain.NewID(), Key: key, At: domain.Now()})
	}
	return err
}
