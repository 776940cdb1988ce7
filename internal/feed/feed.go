// Package feed puts every store change on the bus. Store wraps a
// storage.Store and, after each write commits, publishes the change (see
// package bus). It is the one seam between pure storage and streaming: the
// adapters know nothing of it, and a durable relay that reads committed
// changes from the database can take its place without touching them.
//
// Publishing after the commit leaves a window: a process that dies between
// the commit and the publish loses that change's stream message (the store
// keeps the change itself). Within one process, appends to one subject are
// published in seq order: the append and its publish run under a lock for
// that subject.
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

// Store is a storage.Store that publishes its changes on the bus. Reads go
// straight to the wrapped store.
type Store struct {
	storage.Store
	pub   message.Publisher
	log   *slog.Logger
	seed  maphash.Seed
	locks [stripes]sync.Mutex
}

// New wraps inner so that its changes are published through pub on
// bus.Topic.
func New(inner storage.Store, pub message.Publisher, log *slog.Logger) *Store {
	return &Store{Store: inner, pub: pub, log: log, seed: maphash.MakeSeed()}
}

// publish sends changes; a failure is logged, not returned: the write has
// committed and the caller must learn that it did.
func (s *Store) publish(ctx context.Context, changes ...bus.Change) {
	msgs := make([]*message.Message, 0, len(changes))
	for _, c := range changes {
		msg, err := c.Message()
		if err != nil {
			s.log.ErrorContext(ctx, "change not published", slog.String("change", c.ID), slog.Any("error", err))
			continue
		}
		msgs = append(msgs, msg)
	}
	if err := s.pub.Publish(bus.Topic, msgs...); err != nil {
		s.log.ErrorContext(ctx, "changes committed but not published", slog.Int("count", len(msgs)), slog.Any("error", err))
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
