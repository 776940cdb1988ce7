// Package memory is the in-process storage.Store: everything lives in maps
// behind one mutex and is gone when the process exits. It is for tests and
// single-instance experiments; it honours the whole contract, TTLs included.
package memory

import (
	"context"
	"encoding/json"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/nvent/nvent/internal/domain"
)

// Store is the memory adapter. The zero value is not usable; call New.
type Store struct {
	mu     sync.Mutex
	events map[string][]domain.Event             // subject → events, seq order
	ids    map[string]map[string]int64           // subject → id → seq
	docs   map[string]map[string]domain.Document // collection → id → doc
	kv     map[string]domain.KVEntry
	now    func() time.Time
	closed bool
	// sweepAt is the KV size at which the next set sweeps expired entries.
	sweepAt int
}

// New returns an empty store.
func New() *Store {
	return &Store{
		events: make(map[string][]domain.Event),
		ids:    make(map[string]map[string]int64),
		docs:   make(map[string]map[string]domain.Document),
		kv:     make(map[string]domain.KVEntry),
		now:    domain.Now,
	}
}

// Provide returns a new store and its cleanup, shaped for google/wire.
func Provide() (*Store, func(), error) {
	s := New()
	return s, func() { _ = s.Close() }, nil
}

var errClosed = domain.Errorf(domain.CodeUnavailable, "store is closed")

func (s *Store) lock() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return errClosed
	}
	return nil
}

// Append implements storage.Store.
func (s *Store) Append(ctx context.Context, subject string, in []domain.NewEvent, opts domain.AppendOptions) (domain.AppendResult, error) {
	evs, err := domain.PrepareAppend(subject, in)
	if err != nil {
		return domain.AppendResult{}, err
	}
	if err := s.lock(); err != nil {
		return domain.AppendResult{}, err
	}
	defer s.mu.Unlock()
	stored := s.events[subject]
	prev := int64(len(stored))
	ids := s.ids[subject]
	res := domain.AppendResult{Events: make([]domain.Event, len(evs)), PreviousSeq: prev}
	fresh := 0
	for i, e := range evs {
		if seq, ok := ids[e.ID]; ok {
			res.Events[i] = stored[seq-1]
		} else {
			fresh++
		}
	}
	if fresh == 0 {
		return res, nil
	}
	if opts.ExpectedSeq != nil && *opts.ExpectedSeq != prev {
		return domain.AppendResult{}, domain.Errorf(domain.CodeConflict, "subject %s is at seq %d; expected seq %d", subject, prev, *opts.ExpectedSeq)
	}
	if ids == nil {
		ids = make(map[string]int64)
		s.ids[subject] = ids
	}
	seq := prev
	for i, e := range evs {
		if _, ok := ids[e.ID]; ok {
			continue
		}
		seq++
		e.Seq = seq
		ids[e.ID] = seq
		stored = append(stored, e)
		res.Events[i] = e
	}
	s.events[subject] = stored
	return res, nil
}

// Read implements storage.Store.
func (s *Store) Read(ctx context.Context, subject string, opts domain.ReadOptions) ([]domain.Event, error) {
	if err := domain.ValidateSubject(subject); err != nil {
		return nil, err
	}
	opts, err := opts.Normalize()
	if err != nil {
		return nil, err
	}
	if err := s.lock(); err != nil {
		return nil, err
	}
	stored := slices.Clone(s.events[subject])
	s.mu.Unlock()
	if opts.Order == domain.Desc {
		slices.Reverse(stored)
	}
	out := []domain.Event{}
	for _, e := range stored {
		if len(out) == opts.Limit {
			break
		}
		if e.Seq <= opts.After || (opts.Before > 0 && e.Seq >= opts.Before) {
			continue
		}
		if len(opts.Types) > 0 && !slices.Contains(opts.Types, e.Type) {
			continue
		}
		out = append(out, e)
	}
	return out, nil
}

// SaveDocument implements storage.Store.
func (s *Store) SaveDocument(ctx context.Context, collection, id string, data json.RawMessage, opts domain.SaveOptions) (domain.Document, error) {
	data, err := domain.PrepareDocument(collection, id, data, opts)
	if err != nil {
		return domain.Document{}, err
	}
	if err := s.lock(); err != nil {
		return domain.Document{}, err
	}
	defer s.mu.Unlock()
	coll := s.docs[collection]
	cur, exists := coll[id]
	if err := domain.CheckVersion(collection, id, cur.Version, opts); err != nil {
		return domain.Document{}, err
	}
	now := s.now()
	d := domain.Document{Collection: collection, ID: id, Version: cur.Version + 1, Data: data, CreatedAt: now, UpdatedAt: now}
	if exists {
		d.CreatedAt = cur.CreatedAt
	}
	if coll == nil {
		coll = make(map[string]domain.Document)
		s.docs[collection] = coll
	}
	coll[id] = d
	return d, nil
}

// GetDocument implements storage.Store.
func (s *Store) GetDocument(ctx context.Context, collection, id string) (domain.Document, error) {
	if err := domain.ValidateDocumentKey(collection, id); err != nil {
		return domain.Document{}, err
	}
	if err := s.lock(); err != nil {
		return domain.Document{}, err
	}
	defer s.mu.Unlock()
	d, ok := s.docs[collection][id]
	if !ok {
		return domain.Document{}, domain.Errorf(domain.CodeNotFound, "document %s/%s not found", collection, id)
	}
	return d, nil
}

// DeleteDocument implements storage.Store.
func (s *Store) DeleteDocument(ctx context.Context, collection, id string, opts domain.SaveOptions) error {
	if err := domain.ValidateDocumentKey(collection, id); err != nil {
		return err
	}
	if err := s.lock(); err != nil {
		return err
	}
	defer s.mu.Unlock()
	d, ok := s.docs[collection][id]
	if !ok {
		return domain.Errorf(domain.CodeNotFound, "document %s/%s not found", collection, id)
	}
	if err := domain.CheckVersion(collection, id, d.Version, opts); err != nil {
		return err
	}
	delete(s.docs[collection], id)
	return nil
}

// ListDocuments implements storage.Store.
func (s *Store) ListDocuments(ctx context.Context, collection string, opts domain.ListOptions) (domain.DocumentPage, error) {
	if err := domain.ValidateCollection(collection); err != nil {
		return domain.DocumentPage{}, err
	}
	opts, err := opts.Normalize()
	if err != nil {
		return domain.DocumentPage{}, err
	}
	if err := s.lock(); err != nil {
		return domain.DocumentPage{}, err
	}
	var all []domain.Document
	for id, d := range s.docs[collection] {
		if id > opts.After {
			all = append(all, d)
		}
	}
	s.mu.Unlock()
	sort.Slice(all, func(i, j int) bool { return all[i].ID < all[j].ID })
	return domain.PageOf(all, opts.Limit), nil
}

// liveKey returns the unexpired entry under key, dropping an expired one.
// s.mu must be held.
func (s *Store) liveKey(key string) (domain.KVEntry, bool) {
	e, ok := s.kv[key]
	if ok && domain.Expired(e.ExpiresAt, s.now()) {
		delete(s.kv, key)
		return domain.KVEntry{}, false
	}
	return e, ok
}

// GetKey implements storage.Store.
func (s *Store) GetKey(ctx context.Context, key string) (domain.KVEntry, error) {
	if err := domain.ValidateKey(key); err != nil {
		return domain.KVEntry{}, err
	}
	if err := s.lock(); err != nil {
		return domain.KVEntry{}, err
	}
	defer s.mu.Unlock()
	e, ok := s.liveKey(key)
	if !ok {
		return domain.KVEntry{}, domain.Errorf(domain.CodeNotFound, "key %s not found", key)
	}
	return e, nil
}

// SetKey implements storage.Store. Expired entries are dropped as they are
// met and, so that memory stays bounded, swept now and then by a set.
func (s *Store) SetKey(ctx context.Context, key string, value json.RawMessage, ttl time.Duration) (domain.KVEntry, error) {
	v, exp, err := domain.PrepareKV(key, value, ttl, s.now())
	if err != nil {
		return domain.KVEntry{}, err
	}
	if err := s.lock(); err != nil {
		return domain.KVEntry{}, err
	}
	defer s.mu.Unlock()
	s.sweepLocked()
	e := domain.KVEntry{Key: key, Value: v, ExpiresAt: exp}
	s.kv[key] = e
	return e, nil
}

// sweepLocked drops expired entries once the map has doubled since the last
// sweep, which keeps the cost amortised constant per set.
func (s *Store) sweepLocked() {
	if len(s.kv) < s.sweepAt {
		return
	}
	defer func() { s.sweepAt = max(64, 2*len(s.kv)) }()
	now := s.now()
	for k, e := range s.kv {
		if domain.Expired(e.ExpiresAt, now) {
			delete(s.kv, k)
		}
	}
}

// DeleteKey implements storage.Store.
func (s *Store) DeleteKey(ctx context.Context, key string) error {
	if err := domain.ValidateKey(key); err != nil {
		return err
	}
	if err := s.lock(); err != nil {
		return err
	}
	defer s.mu.Unlock()
	if _, ok := s.liveKey(key); !ok {
		return domain.Errorf(domain.CodeNotFound, "key %s not found", key)
	}
	delete(s.kv, key)
	return nil
}

// IncrKey implements storage.Store.
func (s *Store) IncrKey(ctx context.Context, key string, delta int64) (domain.KVEntry, error) {
	if err := domain.ValidateKey(key); err != nil {
		return domain.KVEntry{}, err
	}
	if err := s.lock(); err != nil {
		return domain.KVEntry{}, err
	}
	defer s.mu.Unlock()
	cur, _ := s.liveKey(key)
	_, v, err := domain.IncrValue(key, cur.Value, delta)
	if err != nil {
		return domain.KVEntry{}, err
	}
	e := domain.KVEntry{Key: key, Value: v, ExpiresAt: cur.ExpiresAt}
	s.kv[key] = e
	return e, nil
}

// Ping implements storage.Store: it fails only once the store is closed.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.lock(); err != nil {
		return err
	}
	s.mu.Unlock()
	return nil
}

// Close drops everything; later calls fail as unavailable.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	s.events, s.ids, s.docs, s.kv = nil, nil, nil, nil
	return nil
}
