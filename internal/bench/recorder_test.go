package bench

import (
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/nvent/nvent/internal/domain"
)

func ds(ns ...int) []time.Duration {
	out := make([]time.Duration, len(ns))
	for i, n := range ns {
		out[i] = time.Duration(n)
	}
	return out
}

func TestPercentileIsTheNearestRank(t *testing.T) {
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(i + 1)
	}
	for _, tc := range []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 0.5, 0},
		{"one sample is every percentile", ds(7), 0.01, 7},
		{"one sample, max", ds(7), 1, 7},
		{"two samples: p50 is the lower", ds(1, 2), 0.5, 1},
		{"two samples: p51 is the upper", ds(1, 2), 0.51, 2},
		{"two samples: p99 is the upper", ds(1, 2), 0.99, 2},
		{"1..100 p50", hundred, 0.50, 50},
		{"1..100 p90", hundred, 0.90, 90},
		{"1..100 p99", hundred, 0.99, 99},
		{"1..100 p100", hundred, 1, 100},
		{"1..100 p1", hundred, 0.01, 1},
		{"1..100 p0.5 rounds up to the first", hundred, 0.005, 1},
		{"ten samples p99 is the max", ds(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 0.99, 10},
		{"ten samples p90 is the ninth", ds(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 0.90, 9},
		{"ten samples p91 is the tenth", ds(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 0.91, 10},
		{"p0 is the min", ds(3, 4, 5), 0, 3},
	} {
		if got := Percentile(tc.sorted, tc.p); got != tc.want {
			t.Errorf("%s: Percentile(p=%v) = %v, want %v", tc.name, tc.p, got, tc.want)
		}
	}
}

func TestSummarizeSortsAndIsExact(t *testing.T) {
	// 1000 distinct samples 1..1000 in random order.
	samples := make([]time.Duration, 1000)
	for i := range samples {
		samples[i] = time.Duration(i + 1)
	}
	rand.Shuffle(len(samples), func(i, j int) { samples[i], samples[j] = samples[j], samples[i] })
	s := Summarize(samples)
	want := Summary{Count: 1000, P50: 500, P90: 900, P99: 990, Max: 1000}
	if s != want {
		t.Fatalf("Summarize = %+v, want %+v", s, want)
	}
	if Summarize(nil) != (Summary{}) {
		t.Fatalf("Summarize(nil) = %+v", Summarize(nil))
	}
	// Every percentile is one of the samples, even with duplicates.
	s = Summarize(ds(5, 5, 5, 1, 9))
	if s.P50 != 5 || s.P90 != 9 || s.P99 != 9 || s.Max != 9 || s.Count != 5 {
		t.Fatalf("Summarize(5,5,5,1,9) = %+v", s)
	}
}

func TestRecorderMatchesCommitsAndReceipts(t *testing.T) {
	rec := NewRecorder(1)
	a, b, c, stray := domain.NewID(), domain.NewID(), domain.NewID(), domain.NewID()
	rec.CommitAt(a, 1_000)
	rec.CommitAt(b, 2_000)
	// c arrives before its writer heard of the commit: 0, and early.
	rec.Receive(c)
	rec.CommitAt(c, rec.Now()+int64(time.Hour))
	rec.Receive(a)
	rec.Receive(a) // a duplicate: no second sample
	rec.Receive(stray)
	rec.Receive("not-a-uuid")

	counts := rec.Counts()
	if counts.Committed != 3 || counts.Duplicates != 1 || counts.Early != 1 {
		t.Fatalf("counts = %+v, want 3 committed, 1 duplicate, 1 early", counts)
	}
	if got := rec.Strays(); got != 2 {
		t.Fatalf("strays = %d, want 2 (an id never committed and one that is no UUID)", got)
	}
	// received counts first receipts: c, a, stray, not-a-uuid.
	if counts.Received != 4 {
		t.Fatalf("received = %d, want 4", counts.Received)
	}
	// a and c matched; b is missing.
	if matched := counts.Received - rec.Strays(); matched != 2 || rec.Expected() != 3 {
		t.Fatalf("matched %d of %d, want 2 of 3", matched, rec.Expected())
	}
	lat := rec.Latency()
	if lat.Count != 2 {
		t.Fatalf("latency samples = %d, want 2 (a and c)", lat.Count)
	}
	if lat.P50 != 0 {
		t.Fatalf("the early receipt must count as 0, got p50 %v", lat.P50)
	}
	if lat.Max <= 0 {
		t.Fatalf("a's latency must be positive, got %v", lat.Max)
	}
}

func TestRecorderFanoutExpectsEveryClient(t *testing.T) {
	rec := NewRecorder(3)
	id := domain.NewID()
	rec.Commit(id)
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() { rec.Receive(id) })
	}
	wg.Wait()
	c := rec.Counts()
	if rec.Expected() != 3 || c.Received != 3 || c.Duplicates != 0 || rec.Latency().Count != 3 {
		t.Fatalf("fanout 3: expected %d, counts %+v, samples %d", rec.Expected(), c, rec.Latency().Count)
	}
}
