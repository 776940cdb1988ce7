package postgres_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/nvent/nvent/internal/domain"
	"github.com/nvent/nvent/internal/storage/postgres"
)

// TestTxIDOrderFollowsSeq: concurrent appenders of one subject get
// transaction ids in seq order, so that a relay reading in (tx_id,
// position) order keeps each subject's seq order.
func TestTxIDOrderFollowsSeq(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	s := open(t, cfg)
	ctx := context.Background()
	const workers, each = 8, 100
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				ev := domain.NewEvent{Type: "t", Data: fmt.Appendf(nil, `{"w":%d,"i":%d}`, w, i)}
				if _, err := s.Append(ctx, "ordered", []domain.NewEvent{ev}, domain.AppendOptions{}); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	pool, closePool, err := postgres.NewPool(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer closePool()
	rows, err := pool.Query(ctx, `SELECT seq FROM events WHERE subject = 'ordered' ORDER BY tx_id, position`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	want := int64(1)
	for rows.Next() {
		var seq int64
		if err := rows.Scan(&seq); err != nil {
			t.Fatal(err)
		}
		if seq != want {
			t.Fatalf("in (tx_id, position) order, seq %d comes where seq %d should", seq, want)
		}
		want++
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if want != workers*each+1 {
		t.Fatalf("read %d events, want %d", want-1, workers*each)
	}
}

// TestConcurrentOverlappingBatches: batches that share one id and each
// bring one of their own store every id once, and each returns the stored
// events, whichever append stored the shared one.
func TestConcurrentOverlappingBatches(t *testing.T) {
	t.Parallel()
	s := open(t, testConfig(t))
	ctx := context.Background()
	const workers = 8
	results := make([]domain.AppendResult, workers)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			batch := []domain.NewEvent{{ID: "shared", Type: "t"}, {ID: fmt.Sprint("own-", w), Type: "t"}}
			results[w], errs[w] = s.Append(ctx, "overlap", batch, domain.AppendOptions{})
		})
	}
	wg.Wait()
	stored, err := s.Read(ctx, "overlap", domain.ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(stored) != workers+1 {
		t.Fatalf("stored %d events, want %d", len(stored), workers+1)
	}
	bySeq := make(map[int64]domain.Event)
	for i, e := range stored {
		if e.Seq != int64(i+1) {
			t.Fatalf("event %d has seq %d", i, e.Seq)
		}
		bySeq[e.Seq] = e
	}
	for w, res := range results {
		if errs[w] != nil {
			t.Fatalf("worker %d: %v", w, errs[w])
		}
		if len(res.Events) != 2 || res.Events[0].ID != "shared" || res.Events[1].ID != fmt.Sprint("own-", w) {
			t.Fatalf("worker %d got %+v", w, res.Events)
		}
		for _, e := range res.Events {
			if bySeq[e.Seq].ID != e.ID {
				t.Fatalf("worker %d got %s at seq %d, but the subject holds %s there", w, e.ID, e.Seq, bySeq[e.Seq].ID)
			}
		}
	}
}
