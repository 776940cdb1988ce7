package relay_test

// The measurements behind docs/RELAY-EVALUATION.md: our relay (a batched
// reader of the events table woken by LISTEN/NOTIFY, publishing on the
// GoChannel bus) against watermill-sql v4's Subscriber given a schema adapter
// that reads the same events table with the same commit-order cursor and an
// offsets adapter that keeps its cursor in a table of its own.
//
// They are benchmarks, not tests, so that `go test ./...` skips them. Run
//
//	go test -run '^$' -bench . -benchtime 1x -count 5 -timeout 30m ./internal/relay/
//
// Every scenario runs on a fresh schema per iteration. The figures that
// matter are the reported metrics (events/s, latency percentiles in ms,
// statements per second); ns/op, which would include the setup, is
// suppressed.

import (
	"context"
	stdsql "database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/nvent/nvent/internal/bus"
	"github.com/nvent/nvent/internal/domain"
	"github.com/nvent/nvent/internal/relay"
	"github.com/nvent/nvent/internal/storage/postgres"
	"github.com/nvent/nvent/internal/testenv"
)

// The workloads.
const (
	evalSubjects    = 16
	evalBacklog     = 20_000 // events waiting when a throughput run starts
	evalAppendBatch = 100    // events per Append when filling the backlog
	evalWriters     = 4      // goroutines appending during a latency run
	evalRate        = 500    // events/s appended during a latency run, all writers together
	evalRun         = 5 * time.Second
	evalIdleWindow  = 3 * time.Second
	evalDeadline    = 45 * time.Second // for anything to arrive: a failure, not a measurement
)

// ---------------------------------------------------------------------------
// The readers under evaluation.

// evalReader starts one reader on db that hands every event it reads to
// sink, and returns a function that stops it and releases what it holds.
type evalReader interface {
	start(b *testing.B, db *evalDB, sink *evalSink) (stop func())
	// checkpoint is a query returning the (tx_id::text, position) the
	// reader has durably got to.
	checkpoint() string
}

// relayReader is our relay. direct replaces the bus by a publisher that
// hands the messages straight to the sink, to tell the reader's cost from
// the bus's.
type relayReader struct {
	batch  int
	poll   time.Duration // 0: the relay's default
	direct bool
}

func (r relayReader) checkpoint() string {
	return `SELECT tx_id::text, position FROM relay_checkpoints WHERE name = 'events'`
}

func (r relayReader) start(b *testing.B, db *evalDB, sink *evalSink) func() {
	b.Helper()
	pool := db.readerPool(b)
	ready, busGone := make(chan struct{}), make(chan struct{})
	var pub message.Publisher = evalDirect{sink}
	var closeBus, consumerDone = func() {}, make(chan struct{})
	if r.direct {
		close(consumerDone)
	} else {
		bs, cleanup, err := bus.New(watermill.NopLogger{})
		if err != nil {
			b.Fatal(err)
		}
		msgs, err := bs.Subscribe(context.Background(), bus.Topic)
		if err != nil {
			b.Fatal(err)
		}
		go evalConsume(msgs, sink, consumerDone)
		pub, closeBus = bs, cleanup
	}
	led := make(chan struct{})
	var ledOnce sync.Once
	rl := relay.New(pool, pub, relay.Config{Schema: db.schema, BatchSize: r.batch, PollInterval: r.poll},
		slog.New(slog.DiscardHandler), relay.Metrics{Leading: func(on bool) {
			if on {
				ledOnce.Do(func() { close(led) })
			}
		}}, ready, busGone)
	ctx, cancel := context.WithCancel(context.Background())
	relayDone := make(chan struct{})
	go func() {
		defer close(relayDone)
		if err := rl.Run(ctx); err != nil {
			b.Errorf("relay: %v", err)
		}
	}()
	close(ready)
	select {
	case <-led:
	case <-time.After(evalDeadline):
		b.Fatal("the relay never took the lease")
	}
	// The app's order: stop the relay, tell it the bus's consumer is going
	// (a publish that returns now is not checkpointed), close the bus.
	return func() {
		cancel()
		close(busGone)
		closeBus()
		<-relayDone
		<-consumerDone
		pool.Close()
	}
}

// evalDirect is a bus-less publisher: Publish returns once the sink has
// every message.
type evalDirect struct{ sink *evalSink }

func (p evalDirect) Publish(_ string, msgs ...*message.Message) error {
	for _, m := range msgs {
		p.sink.deliver(m)
	}
	return nil
}

func (p evalDirect) Close() error { return nil }

// wmReader is watermill-sql's Subscriber on the events table. Its consumer
// either acknowledges once the sink has the message (direct) or first
// publishes it on the bus, as a relay built on it would have to (a router
// handler forwarding to the bus and acking when the bus returns).
type wmReader struct {
	batch     int           // the adapter's SELECT limit; watermill-sql's adapters default to 100
	poll      time.Duration // 0: watermill-sql's default (1s)
	direct    bool
	textOrder bool // order by tx_id::text, as internal/relay does (see evalEventsSchema)
	// xids, when set, counts the subscriber's transactions that were given
	// a transaction id (each costs one statement more, so only Idle sets it).
	xids *atomic.Int64
}

const wmGroup = "nvent"

func (r wmReader) checkpoint() string {
	return `SELECT tx_id::text, position FROM eval_wm_offsets WHERE consumer_group = '` + wmGroup + `'`
}

func (r wmReader) start(b *testing.B, db *evalDB, sink *evalSink) func() {
	b.Helper()
	pool := db.readerPool(b)
	beginner := wsql.BeginnerFromPgx(pool)
	if r.xids != nil {
		beginner = evalXIDCounter{Beginner: beginner, n: r.xids}
	}
	sub, err := wsql.NewSubscriber(beginner, wsql.SubscriberConfig{
		ConsumerGroup:    wmGroup,
		PollInterval:     r.poll,
		SchemaAdapter:    evalEventsSchema{batch: r.batch, textOrder: r.textOrder},
		OffsetsAdapter:   evalOffsets{},
		InitializeSchema: true,
	}, watermill.NopLogger{})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	out, err := sub.Subscribe(ctx, "events")
	if err != nil {
		b.Fatal(err)
	}
	consumerDone := make(chan struct{})
	closeBus := func() {}
	if r.direct {
		go evalConsume(out, sink, consumerDone)
	} else {
		bs, cleanup, err := bus.New(watermill.NopLogger{})
		if err != nil {
			b.Fatal(err)
		}
		msgs, err := bs.Subscribe(context.Background(), bus.Topic)
		if err != nil {
			b.Fatal(err)
		}
		busConsumerDone := make(chan struct{})
		go evalConsume(msgs, sink, busConsumerDone)
		go func() {
			defer close(consumerDone)
			for msg := range out {
				// The bus blocks Publish until its handler acknowledged.
				if err := bs.Publish(bus.Topic, msg); err != nil {
					msg.Nack()
					continue
				}
				msg.Ack()
			}
			cleanup()
			<-busConsumerDone
		}()
		closeBus = cleanup
	}
	return func() {
		// Close stops the subscriber: a message not acknowledged by then is
		// not in the offsets. Only then may the bus go (closing it first
		// would make a blocked Publish return as if acknowledged).
		if err := sub.Close(); err != nil {
			b.Errorf("closing the subscriber: %v", err)
		}
		cancel()
		closeBus()
		<-consumerDone
		pool.Close()
	}
}

// evalEventsSchema is a watermill-sql SchemaAdapter over our events table:
// rows after the consumer group's (tx_id, position), of transactions below
// the snapshot's xmin, in (tx_id, position) order. It does not insert:
// events are appended by the store.
//
// The ORDER BY names the table's columns: a bare "tx_id" would be the
// output column tx_id::text, ordering transaction ids as strings (which
// needs a sort of every row after the cursor, and puts 100000 before
// 99999). textOrder keeps that bare form, as internal/relay's query has it,
// to measure what it costs on the same harness.
type evalEventsSchema struct {
	batch     int
	textOrder bool
}

func (s evalEventsSchema) InsertQuery(wsql.InsertQueryParams) (wsql.Query, error) {
	return wsql.Query{}, errors.New("events are appended by the store, not published through watermill-sql")
}

func (s evalEventsSchema) SelectQuery(p wsql.SelectQueryParams) (wsql.Query, error) {
	at, err := p.OffsetsAdapter.NextOffsetQuery(wsql.NextOffsetQueryParams{Topic: p.Topic, ConsumerGroup: p.ConsumerGroup})
	if err != nil {
		return wsql.Query{}, err
	}
	order := "events.tx_id, events.position"
	if s.textOrder {
		order = "tx_id, position"
	}
	// at locks the group's row (FOR UPDATE): one subscriber of the group
	// reads at a time, and the next one starts where it committed.
	q := `WITH at AS (` + at.Query + `)
	SELECT tx_id::text, position, id, subject, seq, type, coalesce(run_id, ''), coalesce(flow_name, ''),
	       coalesce(step_name, ''), coalesce(step_id, ''), attempt, data, ts
	FROM events
	WHERE (tx_id, position) > ((SELECT tx_id FROM at), (SELECT position FROM at))
	  AND tx_id < pg_snapshot_xmin(pg_current_snapshot())
	ORDER BY ` + order + `
	LIMIT ` + fmt.Sprint(s.batch)
	return wsql.Query{Query: q, Args: at.Args}, nil
}

func (s evalEventsSchema) UnmarshalMessage(p wsql.UnmarshalMessageParams) (wsql.Row, error) {
	var txID string
	var position, attempt int64
	var e domain.Event
	var data []byte
	if err := p.Row.Scan(&txID, &position, &e.ID, &e.Subject, &e.Seq, &e.Type, &e.RunID, &e.FlowName,
		&e.StepName, &e.StepID, &attempt, &data, &e.TS); err != nil {
		return wsql.Row{}, fmt.Errorf("error scanning an event: %w", err)
	}
	e.Attempt, e.Data, e.TS = int(attempt), json.RawMessage(data), e.TS.UTC()
	msg, err := bus.Change{Kind: bus.KindAppend, ID: e.ID, Event: &e, At: e.TS}.Message()
	if err != nil {
		return wsql.Row{}, err
	}
	return wsql.Row{Offset: position, UUID: []byte(e.ID), Msg: msg, ExtraData: map[string]any{"tx_id": txID}}, nil
}

// SchemaInitializingQueries creates nothing: the events table is the store's.
func (s evalEventsSchema) SchemaInitializingQueries(wsql.SchemaInitializingQueriesParams) ([]wsql.Query, error) {
	return nil, nil
}

// SubscribeIsolationLevel is the one watermill-sql's Postgres adapters use.
func (s evalEventsSchema) SubscribeIsolationLevel() stdsql.IsolationLevel {
	return stdsql.LevelRepeatableRead
}

// evalOffsets keeps each consumer group's (tx_id, position) in a table of
// its own. The subscriber runs the ack in the transaction that read the
// batch, after the consumer acknowledged, so the cursor never passes an
// unacknowledged event.
type evalOffsets struct{}

func (evalOffsets) SchemaInitializingQueries(wsql.OffsetsSchemaInitializingQueriesParams) ([]wsql.Query, error) {
	return []wsql.Query{{Query: `CREATE TABLE IF NOT EXISTS eval_wm_offsets (
		consumer_group text PRIMARY KEY,
		tx_id          xid8 NOT NULL,
		position       bigint NOT NULL)`}}, nil
}

// BeforeSubscribingQueries makes sure the group has a row for
// NextOffsetQuery to lock (and a cursor to compare with: without one the
// row comparison is NULL and nothing is ever read).
func (evalOffsets) BeforeSubscribingQueries(p wsql.BeforeSubscribingQueriesParams) ([]wsql.Query, error) {
	return []wsql.Query{{
		Query: `INSERT INTO eval_wm_offsets (consumer_group, tx_id, position) VALUES ($1, '0', 0) ON CONFLICT DO NOTHING`,
		Args:  []any{p.ConsumerGroup},
	}}, nil
}

func (evalOffsets) NextOffsetQuery(p wsql.NextOffsetQueryParams) (wsql.Query, error) {
	return wsql.Query{
		Query: `SELECT tx_id, position FROM eval_wm_offsets WHERE consumer_group = $1 FOR UPDATE`,
		Args:  []any{p.ConsumerGroup},
	}, nil
}

func (evalOffsets) AckMessageQuery(p wsql.AckMessageQueryParams) (wsql.Query, error) {
	return wsql.Query{
		Query: `UPDATE eval_wm_offsets SET tx_id = $1::text::xid8, position = $2 WHERE consumer_group = $3`,
		Args:  []any{p.LastRow.ExtraData["tx_id"], p.LastRow.Offset, p.ConsumerGroup},
	}, nil
}

func (evalOffsets) ConsumedMessageQuery(wsql.ConsumedMessageQueryParams) (wsql.Query, error) {
	return wsql.Query{}, nil
}

// evalXIDCounter counts the subscriber's transactions that were given a
// transaction id, asking each one just before it commits.
type evalXIDCounter struct {
	wsql.Beginner
	n *atomic.Int64
}

func (c evalXIDCounter) BeginTx(ctx context.Context, opts *stdsql.TxOptions) (wsql.Tx, error) {
	tx, err := c.Beginner.BeginTx(ctx, opts)
	if err != nil {
		return tx, err
	}
	return evalXIDTx{Tx: tx, ctx: ctx, n: c.n}, nil
}

type evalXIDTx struct {
	wsql.Tx
	ctx context.Context
	n   *atomic.Int64
}

func (t evalXIDTx) Commit() error {
	rows, err := t.QueryContext(t.ctx, `SELECT pg_current_xact_id_if_assigned() IS NOT NULL`)
	if err == nil {
		var assigned bool
		if rows.Next() && rows.Scan(&assigned) == nil && assigned {
			t.n.Add(1)
		}
		_ = rows.Close()
	}
	return t.Tx.Commit()
}

// ---------------------------------------------------------------------------
// The database and the consumer.

// evalDB is one scenario's schema: a migrated store that appends, and the
// statements the reader under test sent (its pool's tracer counts them).
type evalDB struct {
	url, schema string
	store       *postgres.Store
	stmts       atomic.Int64
	writes      atomic.Int64 // of which checkpoint/offset writes
}

func newEvalDB(b *testing.B) *evalDB {
	b.Helper()
	url, schema := testenv.PostgresSchema(b)
	store, cleanup, err := postgres.Open(context.Background(),
		postgres.Config{URL: url, Schema: schema, MaxConns: 8, AutoMigrate: true}, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(cleanup)
	return &evalDB{url: url, schema: schema, store: store}
}

// readerPool returns a pool on db's schema for the reader under test.
func (db *evalDB) readerPool(b *testing.B) *pgxpool.Pool {
	b.Helper()
	pc, err := pgxpool.ParseConfig(db.url)
	if err != nil {
		b.Fatal(err)
	}
	pc.ConnConfig.RuntimeParams["search_path"] = pgx.Identifier{db.schema}.Sanitize()
	pc.MaxConns = 4
	pc.ConnConfig.Tracer = evalTracer{db}
	pool, err := pgxpool.NewWithConfig(context.Background(), pc)
	if err != nil {
		b.Fatal(err)
	}
	return pool
}

type evalTracer struct{ db *evalDB }

func (t evalTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	if strings.Contains(d.SQL, "pg_current_xact_id_if_assigned") {
		return ctx // evalXIDCounter's, not the reader's
	}
	t.db.stmts.Add(1)
	if strings.Contains(d.SQL, "INSERT INTO relay_checkpoints") || strings.HasPrefix(d.SQL, "UPDATE eval_wm_offsets") {
		t.db.writes.Add(1)
	}
	return ctx
}

func (evalTracer) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// appendBacklog appends n events (a multiple of evalSubjects) over the
// subjects in batches, from evalWriters goroutines, and returns when all are
// committed.
func (db *evalDB) appendBacklog(b *testing.B, n int) {
	b.Helper()
	if n%evalSubjects != 0 {
		b.Fatalf("a backlog of %d events does not divide among %d subjects", n, evalSubjects)
	}
	var wg sync.WaitGroup
	perSubject := n / evalSubjects
	for w := range evalWriters {
		wg.Go(func() {
			for s := w; s < evalSubjects; s += evalWriters {
				for done := 0; done < perSubject; done += evalAppendBatch {
					batch := make([]domain.NewEvent, min(evalAppendBatch, perSubject-done))
					for i := range batch {
						batch[i] = domain.NewEvent{Type: "tick", Data: json.RawMessage(fmt.Sprintf(`{"n":%d}`, done+i))}
					}
					if _, err := db.store.Append(context.Background(), fmt.Sprintf("bench:%d", s), batch, domain.AppendOptions{}); err != nil {
						b.Error(err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	if b.Failed() {
		b.FailNow()
	}
}

// waitCheckpoint waits until the reader's checkpoint is the last event's
// place in commit order.
func (db *evalDB) waitCheckpoint(b *testing.B, r evalReader) {
	b.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, db.url)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "SET search_path = "+pgx.Identifier{db.schema}.Sanitize()); err != nil {
		b.Fatal(err)
	}
	var endTx string
	var endPos int64
	if err := conn.QueryRow(ctx, `SELECT tx_id::text, position FROM events ORDER BY events.tx_id DESC, events.position DESC LIMIT 1`).Scan(&endTx, &endPos); err != nil {
		b.Fatal(err)
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(evalDeadline)
	for {
		var tx string
		var pos int64
		err := conn.QueryRow(ctx, r.checkpoint()).Scan(&tx, &pos)
		if err == nil && tx == endTx && pos == endPos {
			return
		}
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			b.Fatal(err)
		}
		select {
		case <-tick.C:
		case <-deadline:
			b.Fatalf("the checkpoint is at (%s, %d), not at the last event (%s, %d)", tx, pos, endTx, endPos)
		}
	}
}

// evalSink is the consumer: it records when each event arrived, checks that
// each subject's seqs arrive in order (failing the benchmark unless
// lenient, when it only counts), and holds (never acknowledges) the events
// of subject hold.
type evalSink struct {
	hold      string
	lenient   bool
	mu        sync.Mutex
	at        map[string]time.Time
	order     []string
	lastSeq   map[string]int64
	dups      int
	held      int
	disorder  error
	disorders int
	progress  chan struct{}
}

func newEvalSink(hold string) *evalSink {
	return &evalSink{hold: hold, at: map[string]time.Time{}, lastSeq: map[string]int64{}, progress: make(chan struct{}, 1)}
}

// deliver records msg and reports whether to acknowledge it.
func (s *evalSink) deliver(msg *message.Message) bool {
	now := time.Now()
	c, err := bus.Decode(msg)
	s.mu.Lock()
	defer func() {
		s.mu.Unlock()
		select {
		case s.progress <- struct{}{}:
		default:
		}
	}()
	switch {
	case err != nil:
		s.disorder = errors.Join(s.disorder, err)
		return true
	case c.Event.Subject == s.hold && s.hold != "":
		s.held++
		return false
	}
	if _, dup := s.at[c.ID]; dup {
		s.dups++
		return true
	}
	s.at[c.ID] = now
	s.order = append(s.order, c.ID)
	if want := s.lastSeq[c.Event.Subject] + 1; c.Event.Seq != want {
		s.disorders++
		if s.disorder == nil && !s.lenient {
			s.disorder = fmt.Errorf("%s: seq %d arrived when %d was next", c.Event.Subject, c.Event.Seq, want)
		}
	}
	s.lastSeq[c.Event.Subject] = c.Event.Seq
	return true
}

// evalConsume is a bus handler (or watermill-sql consumer) that hands each
// message to sink and acknowledges it unless the sink holds it.
func evalConsume(msgs <-chan *message.Message, sink *evalSink, done chan<- struct{}) {
	defer close(done)
	for msg := range msgs {
		if sink.deliver(msg) {
			msg.Ack()
		}
	}
}

// waitFor waits until the sink has n distinct events and has held held.
func (s *evalSink) waitFor(b *testing.B, n, held int) {
	b.Helper()
	deadline := time.After(evalDeadline)
	for {
		s.mu.Lock()
		got, h, bad := len(s.at), s.held, s.disorder
		s.mu.Unlock()
		if bad != nil {
			b.Fatal(bad)
		}
		if got >= n && h >= held {
			return
		}
		select {
		case <-s.progress:
		case <-deadline:
			b.Fatalf("%d of %d events (%d of %d held) arrived within %v", got, n, h, held, evalDeadline)
		}
	}
}

// expectNothing fails if an event arrives within d.
func (s *evalSink) expectNothing(b *testing.B, d time.Duration, why string) {
	b.Helper()
	s.mu.Lock()
	before := len(s.at) + s.held + s.dups
	s.mu.Unlock()
	window := time.After(d)
	for {
		select {
		case <-s.progress:
			s.mu.Lock()
			now := len(s.at) + s.held + s.dups
			s.mu.Unlock()
			if now != before {
				b.Fatalf("%s, but an event arrived", why)
			}
		case <-window:
			return
		}
	}
}

func (s *evalSink) snapshot() (at map[string]time.Time, order []string, dups int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.at), slices.Clone(s.order), s.dups
}

// percentile returns the p-th percentile (nearest rank) of sorted.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[max(i, 0)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// ---------------------------------------------------------------------------
// The scenarios.

// evalThroughput measures how fast r delivers a backlog of evalBacklog
// committed events: from starting the reader until the consumer has all of
// them (the reader's start-up included).
func evalThroughput(b *testing.B, r evalReader) {
	var total time.Duration
	var stmts, writes int64
	for range b.N {
		db := newEvalDB(b)
		db.appendBacklog(b, evalBacklog)
		sink := newEvalSink("")
		begin := time.Now()
		stop := r.start(b, db, sink)
		sink.waitFor(b, evalBacklog, 0)
		total += time.Since(begin)
		stmts, writes = stmts+db.stmts.Load(), writes+db.writes.Load()
		db.waitCheckpoint(b, r)
		_, _, dups := sink.snapshot()
		stop()
		if dups != 0 {
			b.Fatalf("%d events were delivered twice", dups)
		}
	}
	events := float64(evalBacklog * b.N)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(events/total.Seconds(), "events/s")
	b.ReportMetric(float64(stmts)*1000/events, "stmts/kevent")
	b.ReportMetric(float64(writes)*1000/events, "ckpt-writes/kevent")
}

// evalLatency appends single events at evalRate from evalWriters goroutines
// for evalRun while r runs, and measures from each Append's return to the
// consumer receiving the event. An event can arrive before its Append
// returned (the reader is woken by the commit, the appender by the reply):
// that counts as 0 and is reported as early-%.
func evalLatency(b *testing.B, r evalReader) {
	var lat []time.Duration
	var early, appended int
	var stmts, writes int64
	var elapsed time.Duration
	for range b.N {
		db := newEvalDB(b)
		sink := newEvalSink("")
		stop := r.start(b, db, sink)
		returned := make([]map[string]time.Time, evalWriters)
		var wg sync.WaitGroup
		stmtsBefore, writesBefore := db.stmts.Load(), db.writes.Load()
		begin := time.Now()
		for w := range evalWriters {
			returned[w] = map[string]time.Time{}
			wg.Go(func() {
				tick := time.NewTicker(time.Second * evalWriters / evalRate)
				defer tick.Stop()
				end := time.After(evalRun)
				for i := 0; ; i++ {
					select {
					case <-end:
						return
					case <-tick.C:
					}
					subject := fmt.Sprintf("bench:%d", w+evalWriters*(i%(evalSubjects/evalWriters)))
					res, err := db.store.Append(context.Background(), subject,
						[]domain.NewEvent{{Type: "tick", Data: json.RawMessage(`{"n":1}`)}}, domain.AppendOptions{})
					if err != nil {
						b.Error(err)
						return
					}
					returned[w][res.Events[0].ID] = time.Now()
				}
			})
		}
		wg.Wait()
		if b.Failed() {
			b.FailNow()
		}
		n := 0
		for _, m := range returned {
			n += len(m)
		}
		sink.waitFor(b, n, 0)
		elapsed += time.Since(begin)
		stmts += db.stmts.Load() - stmtsBefore
		writes += db.writes.Load() - writesBefore
		at, _, dups := sink.snapshot()
		stop()
		if dups != 0 {
			b.Fatalf("%d events were delivered twice", dups)
		}
		for _, m := range returned {
			for id, ret := range m {
				d := at[id].Sub(ret)
				if d < 0 {
					early++
					d = 0
				}
				lat = append(lat, d)
			}
		}
		appended += n
	}
	slices.Sort(lat)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(float64(appended)/(evalRun.Seconds()*float64(b.N)), "appends/s")
	b.ReportMetric(ms(percentile(lat, 0.50)), "p50-ms")
	b.ReportMetric(ms(percentile(lat, 0.90)), "p90-ms")
	b.ReportMetric(ms(percentile(lat, 0.99)), "p99-ms")
	b.ReportMetric(ms(lat[len(lat)-1]), "max-ms")
	b.ReportMetric(100*float64(early)/float64(len(lat)), "early-%")
	b.ReportMetric(float64(stmts)/elapsed.Seconds(), "stmts/s")
	b.ReportMetric(float64(writes)/elapsed.Seconds(), "ckpt-writes/s")
}

// evalIdle measures what r costs Postgres while nothing is appended: it
// relays a small backlog, then counts the statements (and, for watermill-sql,
// the transaction ids) it uses over evalIdleWindow.
func evalIdle(b *testing.B, r evalReader, xids *atomic.Int64) {
	var stmts, writes, ids int64
	for range b.N {
		db := newEvalDB(b)
		db.appendBacklog(b, 1024)
		sink := newEvalSink("")
		stop := r.start(b, db, sink)
		sink.waitFor(b, 1024, 0)
		db.waitCheckpoint(b, r)
		s0, w0 := db.stmts.Load(), db.writes.Load()
		var x0 int64
		if xids != nil {
			x0 = xids.Load()
		}
		<-time.After(evalIdleWindow) // the measurement window
		stmts, writes = stmts+db.stmts.Load()-s0, writes+db.writes.Load()-w0
		if xids != nil {
			ids += xids.Load() - x0
		} else {
			ids += db.writes.Load() - w0 // the relay's only writes are its checkpoints
		}
		stop()
	}
	secs := evalIdleWindow.Seconds() * float64(b.N)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(float64(stmts)/secs, "stmts/s")
	b.ReportMetric(float64(writes)/secs, "ckpt-writes/s")
	b.ReportMetric(float64(ids)/secs, "xids/s")
}

// evalCorrectness checks what the choice rests on besides speed, for r:
//   - a transaction that took its position first but commits last is not
//     skipped, and is delivered before the events of later transactions
//     (reported: the time from sending its COMMIT to receiving it);
//   - an event the consumer never acknowledged is delivered again by the
//     next reader (the checkpoint moves only after the acknowledgement).
func evalCorrectness(b *testing.B, r evalReader) {
	var late time.Duration
	for range b.N {
		ctx := context.Background()
		db := newEvalDB(b)
		sink := newEvalSink("held")
		stop := r.start(b, db, sink)

		// The slow writer inserts first (taking the smaller position) and
		// holds its transaction open. Its search_path is the schema, as the
		// store's is: the NOTIFY trigger names current_schema().
		cc, err := pgx.ParseConfig(db.url)
		if err != nil {
			b.Fatal(err)
		}
		cc.RuntimeParams["search_path"] = pgx.Identifier{db.schema}.Sanitize()
		conn, err := pgx.ConnectConfig(ctx, cc)
		if err != nil {
			b.Fatal(err)
		}
		tx, err := conn.Begin(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO events (subject, seq, id, type, data, ts) VALUES ('late', 1, 'late-1', 'x', 'null', now())`); err != nil {
			b.Fatal(err)
		}
		res, err := db.store.Append(ctx, "fast", []domain.NewEvent{{Type: "y"}}, domain.AppendOptions{})
		if err != nil {
			b.Fatal(err)
		}
		sink.expectNothing(b, 300*time.Millisecond, "an older transaction is still open")
		committed := time.Now() // the late event may arrive before Commit returns
		if err := tx.Commit(ctx); err != nil {
			b.Fatal(err)
		}
		_ = conn.Close(ctx)
		sink.waitFor(b, 2, 0)
		at, order, _ := sink.snapshot()
		if order[0] != "late-1" || order[1] != res.Events[0].ID {
			b.Fatalf("delivered %v; want the late commit's late-1 first, then %s", order, res.Events[0].ID)
		}
		late += at["late-1"].Sub(committed)

		// An event that is never acknowledged, then a stop.
		held, err := db.store.Append(ctx, "held", []domain.NewEvent{{Type: "z"}}, domain.AppendOptions{})
		if err != nil {
			b.Fatal(err)
		}
		sink.waitFor(b, 2, 1)
		stop()
		again := newEvalSink("")
		stop = r.start(b, db, again)
		again.waitFor(b, 1, 0)
		again.expectNothing(b, 300*time.Millisecond, "only the unacknowledged event is to be delivered again")
		if _, order, _ := again.snapshot(); len(order) != 1 || order[0] != held.Events[0].ID {
			b.Fatalf("the next reader delivered %v, want only the held event", order)
		}
		db.waitCheckpoint(b, r)
		stop()
	}
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(ms(late/time.Duration(b.N)), "late-commit-ms")
}

// evalXIDBoundary checks the order in which r reads transaction ids that
// straddle a power of ten, as the cluster's ids do when they pass 10^7,
// 10^8, …: it writes one subject's seqs 1‥20, seqs 1‥10 in transactions
// P-10‥P-1 and seqs 11‥20 in P‥P+9 (P the power of ten below the current
// id, the tx_id column set by hand: those transactions are all below xmin),
// reads them 5 at a time, and reports what arrived. It does not fail: a
// reader that orders ids as text loses events here, and the metrics say so.
func evalXIDBoundary(b *testing.B, r evalReader) {
	const n = 20
	var lost, disorders, dups int
	for range b.N {
		ctx := context.Background()
		db := newEvalDB(b)
		conn, err := pgx.Connect(ctx, db.url)
		if err != nil {
			b.Fatal(err)
		}
		var current uint64
		if err := conn.QueryRow(ctx, `SELECT pg_current_xact_id()::text::bigint`).Scan(&current); err != nil {
			b.Fatal(err)
		}
		p := uint64(math.Pow10(int(math.Log10(float64(current - n)))))
		if p < 100 {
			b.Fatalf("the cluster's transaction ids (%d) are too young for this scenario", current)
		}
		for i := range uint64(n) {
			if _, err := conn.Exec(ctx, fmt.Sprintf(`INSERT INTO %s.events (tx_id, subject, seq, id, type, data, ts)
				VALUES ($1::text::xid8, 'boundary', $2, $3, 'x', 'null', now())`, pgx.Identifier{db.schema}.Sanitize()),
				fmt.Sprint(p-n/2+i), i+1, fmt.Sprintf("boundary-%d", i+1)); err != nil {
				b.Fatal(err)
			}
		}
		_ = conn.Close(ctx)
		sink := newEvalSink("")
		sink.lenient = true
		stop := r.start(b, db, sink)
		db.waitCheckpoint(b, r)
		stop()
		at, _, d := sink.snapshot()
		sink.mu.Lock()
		disorders += sink.disorders
		sink.mu.Unlock()
		lost += n - len(at)
		dups += d
	}
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(float64(lost)/float64(b.N), "lost/op")
	b.ReportMetric(float64(disorders)/float64(b.N), "seq-disorders/op")
	b.ReportMetric(float64(dups)/float64(b.N), "dups/op")
}

// ---------------------------------------------------------------------------
// The benchmarks.

func BenchmarkRelayReaderThroughput(b *testing.B) {
	for _, batch := range []int{100, 500} {
		b.Run(fmt.Sprintf("bus/batch=%d", batch), func(b *testing.B) { evalThroughput(b, relayReader{batch: batch}) })
		b.Run(fmt.Sprintf("direct/batch=%d", batch), func(b *testing.B) { evalThroughput(b, relayReader{batch: batch, direct: true}) })
	}
}

func BenchmarkWatermillSQLThroughput(b *testing.B) {
	for _, batch := range []int{100, 500} {
		b.Run(fmt.Sprintf("bus/batch=%d", batch), func(b *testing.B) { evalThroughput(b, wmReader{batch: batch}) })
		b.Run(fmt.Sprintf("direct/batch=%d", batch), func(b *testing.B) { evalThroughput(b, wmReader{batch: batch, direct: true}) })
	}
	// The same reader with internal/relay's ORDER BY (ids as text).
	for _, batch := range []int{100, 500} {
		b.Run(fmt.Sprintf("direct/batch=%d/text-order", batch), func(b *testing.B) {
			evalThroughput(b, wmReader{batch: batch, direct: true, textOrder: true})
		})
	}
}

func BenchmarkRelayReaderLatency(b *testing.B) {
	b.Run("notify/poll=500ms", func(b *testing.B) { evalLatency(b, relayReader{}) })
}

func BenchmarkWatermillSQLLatency(b *testing.B) {
	for _, poll := range []time.Duration{time.Second, 100 * time.Millisecond, 10 * time.Millisecond} {
		b.Run(fmt.Sprintf("poll=%v", poll), func(b *testing.B) { evalLatency(b, wmReader{batch: 100, poll: poll}) })
	}
}

func BenchmarkRelayReaderIdle(b *testing.B) {
	b.Run("notify/poll=500ms", func(b *testing.B) { evalIdle(b, relayReader{}, nil) })
}

func BenchmarkWatermillSQLIdle(b *testing.B) {
	for _, poll := range []time.Duration{time.Second, 10 * time.Millisecond} {
		b.Run(fmt.Sprintf("poll=%v", poll), func(b *testing.B) {
			var xids atomic.Int64
			evalIdle(b, wmReader{batch: 100, poll: poll, xids: &xids}, &xids)
		})
	}
}

func BenchmarkRelayReaderCorrectness(b *testing.B) {
	evalCorrectness(b, relayReader{})
}

func BenchmarkWatermillSQLCorrectness(b *testing.B) {
	evalCorrectness(b, wmReader{batch: 100, poll: 10 * time.Millisecond})
}

func BenchmarkRelayReaderXIDBoundary(b *testing.B) {
	evalXIDBoundary(b, relayReader{batch: 5})
}

func BenchmarkWatermillSQLXIDBoundary(b *testing.B) {
	b.Run("table-order", func(b *testing.B) { evalXIDBoundary(b, wmReader{batch: 5, poll: 10 * time.Millisecond}) })
	b.Run("text-order", func(b *testing.B) {
		evalXIDBoundary(b, wmReader{batch: 5, poll: 10 * time.Millisecond, textOrder: true})
	})
}
