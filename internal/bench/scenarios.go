package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/nvent/nvent/internal/domain"
	"github.com/nvent/nvent/internal/stream"
)

// run runs the configured scenario.
func (r *runner) run(ctx context.Context, m *Machine) ([]Result, error) {
	cfg := r.cfg
	switch cfg.Scenario {
	case ScenarioBaseline:
		res, err := r.baseline(ctx, m)
		return []Result{res}, err
	case ScenarioAppendE2E:
		var results []Result
		var base *Result
		if cfg.Store == "postgres" && cfg.Stream == "redis" {
			res, err := r.baseline(ctx, m)
			if err != nil {
				return nil, err
			}
			results, base = append(results, res), &res
		}
		sys, err := r.startSystem(ctx, m)
		if err != nil {
			return results, err
		}
		res, err := r.appendLoad(ctx, sys, ScenarioAppendE2E, 1, 0)
		if base != nil && base.EventsPerSec > 0 {
			b, ratio := base.EventsPerSec, res.EventsPerSec/base.EventsPerSec
			res.BaselineEventsPerSec, res.Ratio = &b, &ratio
		} else if base == nil {
			res.Note = strings.TrimPrefix(res.Note+"; ", "; ") + "no baseline: it needs --store postgres --stream redis"
		}
		return append(results, res), err
	case ScenarioAppendBatch:
		sys, err := r.startSystem(ctx, m)
		if err != nil {
			return nil, err
		}
		res, err := r.appendLoad(ctx, sys, ScenarioAppendBatch, cfg.Batch, 0)
		return []Result{res}, err
	case ScenarioLatencyAtRate:
		sys, err := r.startSystem(ctx, m)
		if err != nil {
			return nil, err
		}
		res, err := r.appendLoad(ctx, sys, ScenarioLatencyAtRate, 1, cfg.Rate)
		return []Result{res}, err
	case ScenarioFanout:
		return r.fanout(ctx, m)
	case ScenarioHTTPAppend:
		return r.httpAppend(ctx, m)
	}
	return nil, errorf("unknown scenario %q", cfg.Scenario)
}

// payload is the data of an event: a small JSON object.
func payload(worker int, n int64) json.RawMessage {
	b := make([]byte, 0, 128)
	b = append(b, `{"worker":`...)
	b = strconv.AppendInt(b, int64(worker), 10)
	b = append(b, `,"n":`...)
	b = strconv.AppendInt(b, n, 10)
	b = append(b, `,"note":"`+defaultPayloadPadding+`"}`...)
	return b
}

// subjectOf spreads a worker's calls over its share of the subjects:
// worker w writes subjects w, w+C, w+2C, … (mod S), so that writers rarely
// queue for one subject's lock.
func (r *runner) subjectOf(worker int, n int64) string {
	c, s := r.cfg.Concurrency, r.cfg.Subjects
	per := max(s/c, 1)
	i := (worker + c*int(n%int64(per))) % s
	return defaultSubjectPrefix + strconv.Itoa(i)
}

// writeFunc makes one write (an Append, an INSERT + XADD, a POST) of the
// worker's n-th call, records the commits in rec, and returns how many
// events it wrote.
type writeFunc func(ctx context.Context, worker int, n int64) (int, error)

// loadStats is what the writers did.
type loadStats struct {
	start   int64 // on the recorder's clock
	elapsed time.Duration
	errors  int64
	writes  Summary
	lastErr error
}

// maxErrors ends a load whose writes keep failing.
const maxErrors = 1000

// load runs cfg.Concurrency writers for cfg.Duration (or until MaxEvents
// events, maxErrors failed writes, or the end of ctx). With rate > 0 the
// calls are paced: call k starts at start + k/rate (all writers together),
// at once when behind. A write under way when the time is up finishes (its
// context is ctx, not the deadline): cutting it would leave commits that the
// writer never hears of.
func (r *runner) load(ctx context.Context, name string, rec *Recorder, rate int, write writeFunc) loadStats {
	cfg := r.cfg
	lctx, cancel := context.WithTimeout(ctx, cfg.Duration)
	defer cancel()
	var events, errs, next atomic.Int64
	var errMu sync.Mutex
	var lastErr error
	durations := make([][]time.Duration, cfg.Concurrency)
	begin := time.Now()
	start := rec.Now()
	stopProgress := r.progress(name, begin, rec)
	var wg sync.WaitGroup
	for w := range cfg.Concurrency {
		wg.Go(func() {
			var n int64
			for lctx.Err() == nil && events.Load() < MaxEvents {
				if rate > 0 {
					k := next.Add(1) - 1
					at := begin.Add(time.Duration(float64(k) * float64(time.Second) / float64(rate)))
					if wait := time.Until(at); wait > 0 {
						t := time.NewTimer(wait)
						select {
						case <-t.C:
						case <-lctx.Done():
							t.Stop()
							return
						}
					}
				}
				t0 := time.Now()
				k, err := write(ctx, w, n)
				if err != nil {
					if ctx.Err() != nil {
						return
					}
					errMu.Lock()
					lastErr = err
					errMu.Unlock()
					if errs.Add(1) >= maxErrors {
						cancel()
						return
					}
					time.Sleep(10 * time.Millisecond)
					continue
				}
				durations[w] = append(durations[w], time.Since(t0))
				events.Add(int64(k))
				n++
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(begin)
	stopProgress()
	var all []time.Duration
	for _, d := range durations {
		all = append(all, d...)
	}
	return loadStats{start: start, elapsed: elapsed, errors: errs.Load(), writes: Summarize(all), lastErr: lastErr}
}

// result turns a finished phase into a Result.
func result(name string, rec *Recorder, ls loadStats) Result {
	c := rec.Counts()
	matched := c.Received - rec.Strays()
	lat := rec.Latency()
	res := Result{
		Name:        name,
		DurationSec: round(ls.elapsed.Seconds(), 3),
		Events:      c.Committed,
		Received:    matched,
		Missing:     max(rec.Expected()-matched, 0),
		Duplicates:  c.Duplicates,
		Errors:      ls.errors,
		P50Ms:       round(ms(lat.P50), 3),
		P90Ms:       round(ms(lat.P90), 3),
		P99Ms:       round(ms(lat.P99), 3),
		MaxMs:       round(ms(lat.Max), 3),
		Samples:     lat.Count,
		Early:       c.Early,
		WriteP50Ms:  round(ms(ls.writes.P50), 3),
		WriteP99Ms:  round(ms(ls.writes.P99), 3),
	}
	if ls.elapsed > 0 {
		res.CommittedPerSec = round(float64(c.Committed)/ls.elapsed.Seconds(), 1)
	}
	if span := c.LastReceive - time.Duration(ls.start); span > 0 && matched > 0 {
		res.EventsPerSec = round(float64(matched)/span.Seconds(), 1)
	}
	var notes []string
	if res.Missing > 0 {
		notes = append(notes, fmt.Sprintf("%d receipts had not arrived when the wait after the load ended (at most %v, or %v without a receipt): slower than the writers, not lost for sure",
			res.Missing, drainMax, drainIdle))
	}
	if ls.lastErr != nil {
		notes = append(notes, "last write error: "+ls.lastErr.Error())
	}
	res.Note = strings.Join(notes, "; ")
	return res
}

func round(f float64, digits int) float64 {
	p := 1.0
	for range digits {
		p *= 10
	}
	return float64(int64(f*p+0.5)) / p
}

// appendLoad appends through the store: batch events per Append (one
// subject per call), paced at rate events/s when rate > 0, and measures
// until every event arrived on the stream.
func (r *runner) appendLoad(ctx context.Context, sys *system, name string, batch, rate int) (Result, error) {
	rec := NewRecorder(1)
	sys.recv.Store(rec)
	defer sys.recv.Store(nil)
	write := func(ctx context.Context, w int, n int64) (int, error) {
		evs := make([]domain.NewEvent, batch)
		for i := range evs {
			evs[i] = domain.NewEvent{Type: defaultEventType, Data: payload(w, n*int64(batch)+int64(i))}
		}
		res, err := sys.store.Append(ctx, r.subjectOf(w, n), evs, domain.AppendOptions{})
		if err != nil {
			return 0, err
		}
		at := rec.Now()
		for _, e := range res.Events {
			rec.CommitAt(e.ID, at)
		}
		return len(res.Events), nil
	}
	var mon *monitor
	if sys.serve != nil {
		mon = startMonitor(ctx, sys.serve)
		defer mon.stop()
	}
	ls := r.load(ctx, name, rec, rate, write)
	drain(ctx, rec)
	res := result(name, rec, ls)
	if mon != nil {
		mon.fill(&res)
	}
	if rate > 0 {
		res.TargetRate = rate
	}
	if ctx.Err() != nil {
		return res, ctx.Err()
	}
	return res, nil
}

// baselineTable is what the baseline inserts into: an event row without
// nvent's per-subject seq, its transaction id or its outbox trigger, with a
// unique id as idempotency needs.
const baselineTable = `CREATE TABLE bench_baseline (
	position bigserial PRIMARY KEY,
	id       text NOT NULL UNIQUE,
	subject  text NOT NULL,
	seq      bigint NOT NULL,
	type     text NOT NULL,
	data     json NOT NULL,
	ts       timestamptz NOT NULL)`

// baseline does by hand what nvent does: per event a pgx single-row INSERT
// (autocommit: one synchronous commit each), then a go-redis XADD of the
// stream message nvent would publish for it, onto a stream trimmed like
// nvent's; a consumer in this process reads them back with XREAD.
func (r *runner) baseline(ctx context.Context, m *Machine) (Result, error) {
	cfg := r.cfg
	schema, err := r.postgres(ctx, m)
	if err != nil {
		return Result{}, err
	}
	prefix, err := r.redis(ctx, m)
	if err != nil {
		return Result{}, err
	}
	pool, err := r.poolFor(ctx, schema, int32(cfg.Concurrency+2))
	if err != nil {
		return Result{}, err
	}
	if _, err := pool.Exec(ctx, baselineTable); err != nil {
		return Result{}, errorf("creating the baseline table: %w", err)
	}
	opts, err := redis.ParseURL(cfg.RedisURL)
	if err != nil {
		return Result{}, err
	}
	opts.PoolSize = cfg.Concurrency + 2
	writer, reader := redis.NewClient(opts), redis.NewClient(opts)
	r.onCleanup(func() { _ = writer.Close(); _ = reader.Close() })
	key := prefix + "baseline"

	rec := NewRecorder(1)
	rctx, stopReading := context.WithCancel(context.WithoutCancel(ctx))
	readerDone := make(chan struct{})
	subscribed := make(chan struct{})
	go func() {
		defer close(readerDone)
		r.readBaseline(rctx, reader, key, rec, subscribed)
	}()
	<-subscribed
	defer func() { stopReading(); <-readerDone }()

	write := func(ctx context.Context, w int, n int64) (int, error) {
		return baselineWrite(ctx, pool, writer, key, rec, r.subjectOf(w, n), w, n)
	}
	ls := r.load(ctx, ScenarioBaseline, rec, 0, write)
	drain(ctx, rec)
	res := result(ScenarioBaseline, rec, ls)
	return res, ctx.Err()
}

func baselineWrite(ctx context.Context, pool *pgxpool.Pool, rc *redis.Client, key string, rec *Recorder, subject string, w int, n int64) (int, error) {
	ev := domain.Event{ID: domain.NewID(), Subject: subject, Seq: n + 1, Type: defaultEventType, Data: payload(w, n), TS: domain.Now()}
	if _, err := pool.Exec(ctx, `INSERT INTO bench_baseline (id, subject, seq, type, data, ts) VALUES ($1, $2, $3, $4, $5, $6)`,
		ev.ID, ev.Subject, ev.Seq, ev.Type, []byte(ev.Data), ev.TS); err != nil {
		return 0, err
	}
	rec.Commit(ev.ID)
	// The message nvent's stream coordinator publishes for the event.
	data, err := json.Marshal(map[string]any{"subject": ev.Subject, "event": ev})
	if err != nil {
		return 0, err
	}
	body, err := stream.Encode(stream.Message{Type: "store.append", Topic: "store-sync:append:" + ev.Subject,
		Data: data, Timestamp: ev.TS, InstanceID: "bench", EventID: ev.ID})
	if err != nil {
		return 0, err
	}
	if err := rc.XAdd(ctx, &redis.XAddArgs{Stream: key, MaxLen: defaultStreamMaxLen, Approx: true,
		Values: []any{"message", string(body)}}).Err(); err != nil {
		return 0, err
	}
	return 1, nil
}

// readBaseline reads key from its current end with XREAD until ctx ends,
// decoding each message as a stream consumer does.
func (r *runner) readBaseline(ctx context.Context, c *redis.Client, key string, rec *Recorder, subscribed chan<- struct{}) {
	last := "0-0"
	if entries, err := c.XRevRangeN(ctx, key, "+", "-", 1).Result(); err == nil && len(entries) > 0 {
		last = entries[0].ID
	}
	close(subscribed)
	for ctx.Err() == nil {
		streams, err := c.XRead(ctx, &redis.XReadArgs{Streams: []string{key, last}, Count: 1000, Block: 500 * time.Millisecond}).Result()
		if err != nil {
			if err != redis.Nil && ctx.Err() == nil {
				fmt.Fprintf(r.cfg.Log, "bench: baseline XREAD: %v\n", err)
				time.Sleep(100 * time.Millisecond)
			}
			continue
		}
		for _, s := range streams {
			for _, msg := range s.Messages {
				last = msg.ID
				body, _ := msg.Values["message"].(string)
				m, err := stream.Decode([]byte(body))
				if err != nil {
					continue
				}
				rec.Receive(m.EventID)
			}
		}
	}
}

// progress prints a progress line every 250ms while a phase runs, when
// cfg.Progress is set; the returned function stops it and clears the line.
func (r *runner) progress(name string, begin time.Time, rec *Recorder) func() {
	w := r.cfg.Progress
	if w == nil {
		return func() {}
	}
	stop, done := make(chan struct{}), make(chan struct{})
	total := r.cfg.Duration
	go func() {
		defer close(done)
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				fmt.Fprint(w, "\r\033[K")
				return
			case <-tick.C:
				printProgress(w, name, time.Since(begin), total, rec.Counts())
			}
		}
	}()
	return func() { close(stop); <-done }
}

func printProgress(w io.Writer, name string, elapsed, total time.Duration, c Counts) {
	const width = 20
	frac := min(elapsed.Seconds()/total.Seconds(), 1)
	bar := make([]byte, width)
	for i := range bar {
		bar[i] = ' '
		if float64(i) < frac*width {
			bar[i] = '='
		}
	}
	rate := 0.0
	if s := elapsed.Seconds(); s > 0 {
		rate = float64(c.Committed) / s
	}
	fmt.Fprintf(w, "\r\033[K%s [%s] %4.1fs/%v  committed %d (%.0f/s)  received %d",
		name, bar, elapsed.Seconds(), total, c.Committed, rate, c.Received)
}
