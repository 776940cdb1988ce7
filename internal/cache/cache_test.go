package cache_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/nvent/nvent/internal/cache"
	"github.com/nvent/nvent/internal/domain"
	"github.com/nvent/nvent/internal/storage"
	"github.com/nvent/nvent/internal/storage/memory"
	"github.com/nvent/nvent/internal/storage/storagetest"
)

// TestContract: a cache in front of a store is still a store.
func TestContract(t *testing.T) {
	storagetest.Run(t, storagetest.Harness{New: func(t *testing.T) storage.Store {
		m := memory.New()
		t.Cleanup(func() { _ = m.Close() })
		return cache.New(m, 100)
	}})
}

// slowStore lets a test hold a read in flight.
type slowStore struct {
	storage.Store
	reading chan struct{}
	release chan struct{}
}

func (s *slowStore) GetDocument(ctx context.Context, c, id string) (domain.Document, error) {
	d, err := s.Store.GetDocument(ctx, c, id)
	if s.reading != nil {
		s.reading <- struct{}{}
		<-s.release
	}
	return d, err
}

func TestServesFromCacheUntilInvalidated(t *testing.T) {
	ctx := context.Background()
	shared := memory.New() // what another instance writes to as well
	defer shared.Close()
	c := cache.New(shared, 10)
	shared.SaveDocument(ctx, "users", "u1", json.RawMessage(`1`), domain.SaveOptions{})
	if d, _ := c.GetDocument(ctx, "users", "u1"); d.Version != 1 {
		t.Fatal(d)
	}
	shared.SaveDocument(ctx, "users", "u1", json.RawMessage(`2`), domain.SaveOptions{}) // behind the cache's back
	if d, _ := c.GetDocument(ctx, "users", "u1"); d.Version != 1 {
		t.Fatalf("second read = version %d, want the cached 1", d.Version)
	}
	c.InvalidateDocument("users", "u1")
	if d, _ := c.GetDocument(ctx, "users", "u1"); d.Version != 2 {
		t.Fatalf("after invalidation read version %d, want 2", d.Version)
	}
	if st := c.Stats(); st.Hits != 1 || st.Misses != 2 || st.Invalidations != 1 {
		t.Fatalf("stats = %+v", st)
	}
}

func TestAReadRacingAnInvalidationDoesNotCacheTheOldValue(t *testing.T) {
	ctx := context.Background()
	mem := memory.New()
	defer mem.Close()
	slow := &slowStore{Store: mem, reading: make(chan struct{}), release: make(chan struct{})}
	c := cache.New(slow, 10)
	mem.SaveDocument(ctx, "users", "u1", json.RawMessage(`1`), domain.SaveOptions{})
	got := make(chan domain.Document)
	go func() { d, _ := c.GetDocument(ctx, "users", "u1"); got <- d }()
	<-slow.reading // the read has version 1 in hand
	mem.SaveDocument(ctx, "users", "u1", json.RawMessage(`2`), domain.SaveOptions{})
	c.InvalidateDocument("users", "u1") // the store-sync message arrives
	close(slow.release)
	if d := <-got; d.Version != 1 {
		t.Fatalf("racing read returned %d", d.Version)
	}
	slow.reading = nil
	if d, _ := c.GetDocument(ctx, "users", "u1"); d.Version != 2 {
		t.Fatalf("the read that raced the invalidation cached version %d; want a fresh read of 2", d.Version)
	}
}
