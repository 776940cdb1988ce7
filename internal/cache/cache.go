// Package cache fronts a storage.Store's document and key reads with a
// bounded in-process LRU. Writes made through this Store drop the entries
// they touch; writes made by other instances reach it as store-sync stream
// messages, which the cache-invalidation wiring turns into Invalidate calls.
//
// A read that races with an invalidation never re-inserts the value it read
// before the invalidation: fills are tagged with a generation that every
// invalidation advances, and a fill from an older generation is discarded.
package cache

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/nvent/nvent/internal/domain"
	"github.com/nvent/nvent/internal/storage"
)

// DefaultSize is how many documents and keys the cache holds by default.
const DefaultSize = 10_000

// Stats counts what the cache did.
type Stats struct {
	Hits, Misses, Invalidations uint64
}

type entry struct {
	doc *domain.Document
	kv  *domain.KVEntry
}

// Store is a caching storage.Store. Safe for concurrent use.
type Store struct {
	storage.Store
	lru *lru.Cache[string, entry]

	mu    sync.Mutex
	gen   uint64
	stats Stats
	now   func() time.Time
}

// New fronts inner with a cache of size entries (DefaultSize if size <= 0).
func New(inner storage.Store, size int) *Store {
	if size <= 0 {
		size = DefaultSize
	}
	l, _ := lru.New[string, entry](size) // only fails for size <= 0
	return &Store{Store: inner, lru: l, now: domain.Now}
}

func docKey(collection, id string) string { return "d\x00" + collection + "\x00" + id }
func kvKey(key string) string             { return "k\x00" + key }

// Stats returns the counters so far.
func (s *Store) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// InvalidateDocument drops a cached document.
func (s *Store) InvalidateDocument(collection, id string) { s.invalidate(docKey(collection, id)) }

// InvalidateKey drops a cached key.
func (s *Store) InvalidateKey(key string) { s.invalidate(kvKey(key)) }

func (s *Store) invalidate(k string) {
	s.mu.Lock()
	s.gen++
	s.stats.Invalidations++
	s.lru.Remove(k)
	s.mu.Unlock()
}

// lookup returns a cached entry, counting the hit or miss, and the
// generation a fill must match.
func (s *Store) lookup(k string) (entry, bool, uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.lru.Get(k)
	if ok {
		s.stats.Hits++
	} else {
		s.stats.Misses++
	}
	return e, ok, s.gen
}

// fill caches e unless an invalidation came after generation gen.
func (s *Store) fill(k string, e entry, gen uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gen == gen {
		s.lru.Add(k, e)
	}
}

// GetDocument implements storage.Store, from the cache when it can.
func (s *Store) GetDocument(ctx context.Context, collection, id string) (domain.Document, error) {
	k := docKey(collection, id)
	e, ok, gen := s.lookup(k)
	if ok {
		return *e.doc, nil
	}
	d, err := s.Store.GetDocument(ctx, collection, id)
	if err == nil {
		s.fill(k, entry{doc: &d}, gen)
	}
	return d, err
}

// GetKey implements storage.Store, from the cache when the entry is cached
// and has not expired.
func (s *Store) GetKey(ctx context.Context, key string) (domain.KVEntry, error) {
	k := kvKey(key)
	e, ok, gen := s.lookup(k)
	if ok && !domain.Expired(e.kv.ExpiresAt, s.now()) {
		return *e.kv, nil
	}
	kv, err := s.Store.GetKey(ctx, key)
	if err == nil {
		s.fill(k, entry{kv: &kv}, gen)
	}
	return kv, err
}

// SaveDocument implements storage.Store and drops the cached document.
func (s *Store) SaveDocument(ctx context.Context, collection, id string, data json.RawMessage, opts domain.SaveOptions) (domain.Document, error) {
	defer s.InvalidateDocument(collection, id)
	return s.Store.SaveDocument(ctx, collection, id, data, opts)
}

// DeleteDocument implements storage.Store and drops the cached document.
func (s *Store) DeleteDocument(ctx context.Context, collection, id string, opts domain.SaveOptions) error {
	defer s.InvalidateDocument(collection, id)
	return s.Store.DeleteDocument(ctx, collection, id, opts)
}

// SetKey implements storage.Store and drops the cached key.
func (s *Store) SetKey(ctx context.Context, key string, value json.RawMessage, ttl time.Duration) (domain.KVEntry, error) {
	defer s.InvalidateKey(key)
	return s.Store.SetKey(ctx, key, value, ttl)
}

// IncrKey implements storage.Store and drops the cached key.
func (s *Store) IncrKey(ctx context.Context, key string, delta int64) (domain.KVEntry, error) {
	defer s.InvalidateKey(key)
	return s.Store.IncrKey(ctx, key, delta)
}

// DeleteKey implements storage.Store and drops the cached key.
func (s *Store) DeleteKey(ctx context.Context, key string) error {
	defer s.InvalidateKey(key)
	return s.Store.DeleteKey(ctx, key)
}
