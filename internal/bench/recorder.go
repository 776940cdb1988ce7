package bench

import (
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
)

// Percentile returns the p-th percentile (0 < p ≤ 1) of sorted by the
// nearest-rank method: the smallest sample such that at least p of all
// samples are at or below it. It is exact (no buckets, no interpolation): it
// is always one of the recorded samples. It returns 0 for no samples.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// Summary is the distribution of a set of latency samples.
type Summary struct {
	Count              int
	P50, P90, P99, Max time.Duration
}

// Summarize sorts samples (in place) and returns their percentiles.
func Summarize(samples []time.Duration) Summary {
	slices.Sort(samples)
	s := Summary{Count: len(samples)}
	if len(samples) == 0 {
		return s
	}
	s.P50 = Percentile(samples, 0.50)
	s.P90 = Percentile(samples, 0.90)
	s.P99 = Percentile(samples, 0.99)
	s.Max = samples[len(samples)-1]
	return s
}

// Samples is a concurrency-safe list of durations.
type Samples struct {
	mu sync.Mutex
	d  []time.Duration
}

// Add records one sample.
func (s *Samples) Add(d time.Duration) {
	s.mu.Lock()
	s.d = append(s.d, d)
	s.mu.Unlock()
}

// Summary returns the distribution of the samples so far.
func (s *Samples) Summary() Summary {
	s.mu.Lock()
	d := slices.Clone(s.d)
	s.mu.Unlock()
	return Summarize(d)
}

// Recorder matches the commit of each event (the moment its Append, INSERT
// or POST returned to the writer) with its receipts (the moment a consumer
// got it off the stream), by event id, and keeps one latency sample per
// receipt: receipt − commit. A receipt may come before the writer got its
// answer (the relay is woken by the commit, the writer by the reply); it
// counts as 0 and as early.
//
// With fanout > 1 every event is expected that many times (once per
// client); otherwise a second receipt of an id is a duplicate and yields no
// sample.
type Recorder struct {
	epoch  time.Time
	fanout int

	mu      sync.Mutex
	entries map[uuid.UUID]entry
	early   map[uuid.UUID][]int64 // receipts before their commit was recorded
	samples []time.Duration
	strays  int64 // receipts of ids that are not UUIDs

	committed  atomic.Int64
	received   atomic.Int64 // first receipts (fanout 1) or every receipt (fanout > 1)
	duplicates atomic.Int64
	earlyN     atomic.Int64
	lastRecv   atomic.Int64 // since epoch, ns
}

type entry struct {
	commit int64 // since epoch, ns; -1 until committed
	recvs  int32
}

// NewRecorder returns a Recorder expecting each event fanout times (1 for a
// single consumer).
func NewRecorder(fanout int) *Recorder { return newRecorderAt(fanout, time.Now()) }

// newRecorderAt returns a Recorder whose clock starts at epoch, so that
// several recorders can share one clock.
func newRecorderAt(fanout int, epoch time.Time) *Recorder {
	return &Recorder{epoch: epoch, fanout: max(fanout, 1), entries: make(map[uuid.UUID]entry, 1<<16), early: map[uuid.UUID][]int64{}}
}

func (r *Recorder) now() int64 { return int64(time.Since(r.epoch)) }

// Commit records that the event id was committed now.
func (r *Recorder) Commit(id string) { r.CommitAt(id, r.now()) }

// CommitAt records a commit at at, a time of Now. Event ids are UUIDs (as
// domain.NewID makes them); a commit of anything else is not recorded.
func (r *Recorder) CommitAt(id string, at int64) {
	key, err := uuid.Parse(id)
	if err != nil {
		return
	}
	r.committed.Add(1)
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.entries[key]
	if !ok {
		r.entries[key] = entry{commit: at}
		return
	}
	e.commit = at
	r.entries[key] = e
	for range r.early[key] {
		r.samples = append(r.samples, 0)
		r.earlyN.Add(1)
	}
	delete(r.early, key)
}

// Now is the recorder's clock: nanoseconds since it was made.
func (r *Recorder) Now() int64 { return r.now() }

// Receive records that a consumer got the event id now.
func (r *Recorder) Receive(id string) {
	at := r.now()
	key, err := uuid.Parse(id)
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		r.strays++
		r.received.Add(1)
		return
	}
	e, ok := r.entries[key]
	if !ok {
		e = entry{commit: -1}
	}
	e.recvs++
	r.entries[key] = e
	if r.fanout == 1 && e.recvs > 1 {
		r.duplicates.Add(1)
		return
	}
	r.received.Add(1)
	r.lastRecv.Store(at)
	if e.commit < 0 {
		r.early[key] = append(r.early[key], at)
		return
	}
	r.samples = append(r.samples, time.Duration(max(at-e.commit, 0)))
}

// Counts are the recorder's tallies.
type Counts struct {
	Committed, Received, Duplicates, Early int64
	// LastReceive is when the last receipt arrived, on the recorder's
	// clock (0: none).
	LastReceive time.Duration
}

// Counts returns the tallies so far.
func (r *Recorder) Counts() Counts {
	return Counts{
		Committed:   r.committed.Load(),
		Received:    r.received.Load(),
		Duplicates:  r.duplicates.Load(),
		Early:       r.earlyN.Load(),
		LastReceive: time.Duration(r.lastRecv.Load()),
	}
}

// Expected is how many receipts the committed events should give.
func (r *Recorder) Expected() int64 { return r.committed.Load() * int64(r.fanout) }

// Latency returns the distribution of commit → receipt so far. Receipts of
// ids never committed (not written by this run) are not in it.
func (r *Recorder) Latency() Summary {
	r.mu.Lock()
	d := slices.Clone(r.samples)
	r.mu.Unlock()
	return Summarize(d)
}

// Strays counts receipts of ids that were never committed (by the end of
// the run: events this run did not write).
func (r *Recorder) Strays() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := r.strays
	for _, at := range r.early {
		n += int64(len(at))
	}
	return n
}
