// Package relay moves what Postgres committed onto the bus, durably: the
// events table is the outbox of events, and the changes table that of
// document and key changes. Nothing is written twice per event.
//
// # Commit order
//
// position (a sequence) is handed out at insert, not at commit: a reader that
// checkpoints "position > last" skips a row whose transaction commits after a
// later one's. The relay reads rows in (tx_id, position) order, and only
// those of transactions below pg_snapshot_xmin(pg_current_snapshot()): every
// transaction with a smaller id has ended, so no row can still appear behind
// the cursor. (This is how watermill-sql's Postgres adapter reads too.) A
// long-running transaction anywhere in the cluster holds xmin back and so
// delays the relay — it never makes it skip anything.
//
// # Checkpoints and delivery
//
// A batch is published on the bus, whose Publish returns once every handler
// acknowledged every message — the stream coordinator acknowledges only after
// the stream acknowledged its publish. Only then does the relay store the
// batch's last (tx_id, position) in relay_checkpoints. A crash anywhere
// before that makes the next relay publish the batch again: delivery is at
// least once, and every stream message carries the event (or change) id for
// consumers to deduplicate. Relayed change rows are deleted with the
// checkpoint update; events stay, they are the log.
//
// # One relay per cluster
//
// Every instance runs a Relay; only the holder of a Postgres advisory lock
// (one per schema) relays. The lock lives on a connection the holder keeps
// for as long as it leads, so when the holder dies its connection ends and
// the lock is free at once; the others try every LeaseRetry.
//
// # Waking up
//
// The Postgres store sends NOTIFY nvent_relay (payload: the schema) after
// its writes commit, from a transaction of its own (a NOTIFY inside the
// writing transaction would serialise every commit); the leader LISTENs on
// its lease connection and relays at once, and polls every PollInterval in
// case a notification was missed or a row was written by another program.
//
// # Batches
//
// After the bus took a batch, the relay calls the bus's Flush (when it has
// one): handlers that queue their output (the stream coordinator's
// stream.Batch) write it then, and only once that returned without error
// is the batch checkpointed.
package relay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/nvent/nvent/internal/bus"
	"github.com/nvent/nvent/internal/domain"
)

// Config tunes the relay.
type Config struct {
	// Schema is the one the store's tables live in (its NOTIFYs carry it).
	// Default "public".
	Schema string
	// BatchSize is how many rows one read takes. Default 500.
	BatchSize int
	// PollInterval is how often the leader looks for rows without being
	// notified. Default 500ms.
	PollInterval time.Duration
	// LeaseRetry is how often an instance that does not lead tries to take
	// the lease. Default 1s.
	LeaseRetry time.Duration
	// ErrorBackoff is the wait after a failed round (Postgres unreachable).
	// Default 1s.
	ErrorBackoff time.Duration
}

func (c *Config) setDefaults() {
	if c.Schema == "" {
		c.Schema = "public"
	}
	if c.BatchSize <= 0 {
		c.BatchSize = 500
	}
	if c.PollInterval <= 0 {
		c.PollInterval = 500 * time.Millisecond
	}
	if c.LeaseRetry <= 0 {
		c.LeaseRetry = time.Second
	}
	if c.ErrorBackoff <= 0 {
		c.ErrorBackoff = time.Second
	}
}

// Metrics are what the relay reports; nil fields are not reported.
type Metrics struct {
	// Relayed counts rows published and acknowledged, by table.
	Relayed func(table string, n int)
	// Leading is set to true while this instance holds the lease.
	Leading func(bool)
	// Checkpoint reports the position relayed up to, by table.
	Checkpoint func(table string, position int64)
	// Lag reports, by table, how many positions the newest committed row is
	// ahead of the checkpoint and how old the oldest row not yet relayed is
	// (0 when caught up). Only a relay that leads reports it.
	Lag func(table string, events int64, age time.Duration)
}

// core is what every relay shares: publishing batches on the bus and
// checkpointing them once acknowledged.
type core struct {
	// lagAge and lagAt are the largest lag age measured last and when
	// (unix nanoseconds; 0 while not leading).
	lagAge, lagAt atomic.Int64

	bus     message.Publisher
	cfg     Config
	log     *slog.Logger
	metrics Metrics
	ready   <-chan struct{}
	busGone <-chan struct{}
}

func newCore(b message.Publisher, cfg Config, log *slog.Logger, m Metrics, ready, busGone <-chan struct{}) *core {
	cfg.setDefaults()
	if m.Relayed == nil {
		m.Relayed = func(string, int) {}
	}
	if m.Leading == nil {
		m.Leading = func(bool) {}
	}
	if m.Checkpoint == nil {
		m.Checkpoint = func(string, int64) {}
	}
	if m.Lag == nil {
		m.Lag = func(string, int64, time.Duration) {}
	}
	return &core{bus: b, cfg: cfg, log: log.With(slog.String("component", "relay")), metrics: m, ready: ready, busGone: busGone}
}

// source is one outbox table.
type source interface {
	// name is the table's ("events", "changes").
	name() string
	// load reads the stored checkpoint.
	load(ctx context.Context) error
	// next reads up to limit rows after the checkpoint, as bus messages,
	// and a commit that stores the checkpoint past them.
	next(ctx context.Context, limit int) (msgs []*message.Message, commit func(context.Context) (int64, error), err error)
	// lag says how far the newest committed row is ahead of the checkpoint,
	// in positions and in the age of the oldest row not yet relayed.
	lag(ctx context.Context) (int64, time.Duration, error)
}

// flusher is a bus whose handlers may queue their output until Flush
// (bus.Bus).
type flusher interface {
	Flush(ctx context.Context) error
}

// elect waits until the bus is ready, then runs tryLead round after round
// until ctx ends: at once again after a round that led, after LeaseRetry
// when another instance leads, after ErrorBackoff when the round failed
// (logged). It returns nil on shutdown.
func (c *core) elect(ctx context.Context, tryLead func(context.Context) (led bool, err error)) error {
	if !c.waitReady(ctx) {
		return nil
	}
	for {
		led, err := tryLead(ctx)
		if ctx.Err() != nil {
			return nil
		}
		wait := c.cfg.LeaseRetry
		if err != nil {
			c.log.Warn("relay round failed; retrying", slog.Any("error", err), slog.Duration("in", c.cfg.ErrorBackoff))
			wait = c.cfg.ErrorBackoff
		} else if led {
			wait = 0
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

// lagInterval is how often pump measures the relay's lag.
const lagInterval = time.Second

// pump relays every source until ctx ends or something fails, calling wait
// whenever it has caught up.
func (c *core) pump(ctx context.Context, sources []source, wait func(context.Context) error) error {
	for _, s := range sources {
		if err := s.load(ctx); err != nil {
			return err
		}
	}
	var lagAt time.Time
	for {
		full := false
		for _, s := range sources {
			n, err := c.relayBatch(ctx, s)
			if err != nil || ctx.Err() != nil {
				return err
			}
			select {
			case <-c.busGone: // nothing published now would be handled
				<-ctx.Done()
				return nil
			default:
			}
			full = full || n == c.cfg.BatchSize
		}
		// The lag costs a query per source: measure it at most once per
		// lagInterval, not after every batch.
		if time.Since(lagAt) >= lagInterval {
			c.reportLag(ctx, sources)
			lagAt = time.Now()
		}
		if full {
			continue
		}
		if err := wait(ctx); err != nil {
			return err
		}
	}
}

// relayBatch publishes the next batch of s and checkpoints it once the bus
// acknowledged it. It returns how many rows it relayed.
func (c *core) relayBatch(ctx context.Context, s source) (int, error) {
	msgs, commit, err := s.next(ctx, c.cfg.BatchSize)
	if err != nil || len(msgs) == 0 {
		return 0, err
	}
	if err := c.bus.Publish(bus.Topic, msgs...); err != nil {
		return 0, fmt.Errorf("error publishing %d %s on the bus: %w", len(msgs), s.name(), err)
	}
	// Handlers that batch their stream writes (the stream coordinator)
	// acknowledged the messages before writing them: make them write now.
	if f, ok := c.bus.(flusher); ok {
		if err := f.Flush(ctx); err != nil {
			return 0, fmt.Errorf("error flushing %d %s to the stream: %w", len(msgs), s.name(), err)
		}
	}
	// Once the router is closing, the bus lets Publish return without every
	// handler having acknowledged: the batch counts as not delivered and is
	// relayed again by the next leader. Otherwise it was handled, and is
	// checkpointed even if this relay is being stopped.
	select {
	case <-c.busGone:
		return 0, nil
	default:
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	pos, err := commit(cctx)
	if err != nil {
		return 0, err
	}
	c.metrics.Relayed(s.name(), len(msgs))
	c.metrics.Checkpoint(s.name(), pos)
	return len(msgs), nil
}

// reportLag measures each source's lag, remembers the largest age (for
// Stalled) and reports it; a failed measurement is only logged.
func (c *core) reportLag(ctx context.Context, sources []source) {
	var worst time.Duration
	for _, s := range sources {
		n, age, err := s.lag(ctx)
		if err != nil {
			c.log.Debug("relay lag not measured", slog.String("table", s.name()), slog.Any("error", err))
			continue
		}
		c.metrics.Lag(s.name(), n, age)
		worst = max(worst, age)
	}
	c.lagAge.Store(int64(worst))
	c.lagAt.Store(time.Now().UnixNano())
}

// Stalled reports an error when this relay leads and the oldest committed
// row it has not relayed is older than threshold, or when it leads and has
// not measured its lag for that long (it is stuck): a readiness check.
func (c *core) Stalled(threshold time.Duration) error {
	at := c.lagAt.Load()
	if at == 0 {
		return nil // not leading: another instance relays
	}
	if age := time.Duration(c.lagAge.Load()); age > threshold {
		return fmt.Errorf("the relay is %v behind the oldest commit it has not published", age.Round(time.Second))
	}
	if since := time.Since(time.Unix(0, at)); since > threshold {
		return fmt.Errorf("the relay has not made a round for %v", since.Round(time.Second))
	}
	return nil
}

// waitReady waits until the bus's consumer runs; false if ctx ended first.
func (c *core) waitReady(ctx context.Context) bool {
	select {
	case <-c.ready:
		return true
	case <-ctx.Done():
		return false
	}
}

// Relay relays what Postgres committed to the bus. Run it; it is safe to
// run one in every instance: only the lease holder relays.
type Relay struct {
	*core
	pool *pgxpool.Pool
}

// New returns a relay reading through pool and publishing on b. It starts
// relaying once ready is closed (the router's handlers are subscribed to
// the bus; a message published before that would reach nobody). busGone is
// closed when the bus's consumer begins to stop: a publish that returns
// after that may not have been handled, and is not checkpointed.
func New(pool *pgxpool.Pool, b message.Publisher, cfg Config, log *slog.Logger, m Metrics, ready, busGone <-chan struct{}) *Relay {
	return &Relay{core: newCore(b, cfg, log, m, ready, busGone), pool: pool}
}

// lockID is the advisory lock of the relay of r's schema.
func (r *Relay) lockID() int64 {
	h := fnv.New64a()
	h.Write([]byte("nvent relay " + r.cfg.Schema))
	return int64(h.Sum64())
}

// Run takes part in the leader election and relays while it leads, until
// ctx ends. It returns nil on shutdown: failures (Postgres down, the lease
// connection lost) are logged and retried.
func (r *Relay) Run(ctx context.Context) error {
	return r.elect(ctx, r.tryLead)
}

// tryLead takes the lease if it is free and relays until ctx ends or the
// lease connection fails. led reports whether it held the lease.
func (r *Relay) tryLead(ctx context.Context) (led bool, err error) {
	conn, err := r.pool.Acquire(ctx)
	if err != nil {
		return false, fmt.Errorf("error acquiring the lease connection: %w", err)
	}
	defer conn.Release()
	var got bool
	if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", r.lockID()).Scan(&got); err != nil {
		return false, fmt.Errorf("error trying the relay lease: %w", err)
	}
	if !got {
		return false, nil
	}
	r.log.Info("relay lease taken: this instance relays")
	r.metrics.Leading(true)
	defer func() {
		r.metrics.Leading(false)
		r.lagAt.Store(0)
		// A connection that failed may still hold the lock on a half-open
		// session: close it rather than give it back to the pool.
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		if _, uerr := conn.Exec(uctx, "SELECT pg_advisory_unlock($1)", r.lockID()); uerr != nil || err != nil {
			_ = conn.Conn().Close(uctx)
		}
		r.log.Info("relay lease released")
	}()
	if _, err := conn.Exec(ctx, "LISTEN nvent_relay"); err != nil {
		return true, fmt.Errorf("error listening for commits: %w", err)
	}
	defer func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_, _ = conn.Exec(uctx, "UNLISTEN nvent_relay")
	}()
	return true, r.lead(ctx, conn.Conn())
}

// lead relays until ctx ends or something fails.
func (r *Relay) lead(ctx context.Context, listen *pgx.Conn) error {
	sources := []source{newEventsTable(r.pool), newChangesTable(r.pool)}
	return r.pump(ctx, sources, func(ctx context.Context) error { return r.waitForCommit(ctx, listen) })
}

// waitForCommit returns when a notification for this schema arrives, the
// poll interval passes, or ctx ends; an error means the connection failed.
func (r *Relay) waitForCommit(ctx context.Context, listen *pgx.Conn) error {
	wctx, cancel := context.WithTimeout(ctx, r.cfg.PollInterval)
	defer cancel()
	for {
		n, err := listen.WaitForNotification(wctx)
		switch {
		case wctx.Err() != nil:
			return nil // the poll interval passed, or shutdown
		case err != nil:
			return fmt.Errorf("error waiting for commits: %w", err)
		case n.Payload == r.cfg.Schema:
			return nil
		}
	}
}

// cursor is a place in a table's commit order.
type cursor struct {
	txID     string // xid8 as text: it is a uint64
	position int64
}

// relayed is one row read: the change and where it stands.
type relayed struct {
	change bus.Change
	at     cursor
}

// table is one Postgres outbox table.
type table struct {
	pool  *pgxpool.Pool
	table string
	query string // $1 tx_id, $2 position, $3 limit; first two columns are tx_id::text, position
	// lagQuery returns the newest position and the age in seconds of the
	// oldest row after the cursor ($1 tx_id, $2 position).
	lagQuery string
	decode   func(row pgx.Rows) (relayed, error)
	// prune, when set, deletes relayed rows with the checkpoint update.
	prune bool
	at    cursor
}

func (t *table) name() string { return t.table }

func (t *table) load(ctx context.Context) error {
	t.at = cursor{txID: "0"}
	err := t.pool.QueryRow(ctx, `SELECT tx_id::text, position FROM relay_checkpoints WHERE name = $1`, t.table).Scan(&t.at.txID, &t.at.position)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("error loading the %s checkpoint: %w", t.table, err)
	}
	return nil
}

// next reads the rows after the cursor of transactions that have all ended.
func (t *table) next(ctx context.Context, limit int) ([]*message.Message, func(context.Context) (int64, error), error) {
	rows, err := t.pool.Query(ctx, t.query, t.at.txID, t.at.position, limit)
	if err != nil {
		return nil, nil, fmt.Errorf("error reading %s: %w", t.table, err)
	}
	defer rows.Close()
	var msgs []*message.Message
	var last cursor
	for rows.Next() {
		r, err := t.decode(rows)
		if err != nil {
			return nil, nil, fmt.Errorf("error decoding %s row after %v: %w", t.table, t.at, err)
		}
		msg, err := r.change.Message()
		if err != nil {
			return nil, nil, err
		}
		msgs = append(msgs, msg)
		last = r.at
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("error reading %s: %w", t.table, err)
	}
	return msgs, func(ctx context.Context) (int64, error) { return last.position, t.commit(ctx, last) }, nil
}

func (t *table) lag(ctx context.Context) (int64, time.Duration, error) {
	var newest int64
	var age float64
	err := t.pool.QueryRow(ctx, t.lagQuery, t.at.txID, t.at.position).Scan(&newest, &age)
	if err != nil {
		return 0, 0, err
	}
	return max(0, newest-t.at.position), time.Duration(age * float64(time.Second)), nil
}

func (t *table) commit(ctx context.Context, to cursor) error {
	q := `INSERT INTO relay_checkpoints (name, tx_id, position) VALUES ($1, $2::text::xid8, $3)
	      ON CONFLICT (name) DO UPDATE SET tx_id = EXCLUDED.tx_id, position = EXCLUDED.position, updated_at = now()`
	if t.prune {
		q = `WITH pruned AS (DELETE FROM changes WHERE (tx_id, position) <= ($2::text::xid8, $3))
		     ` + q
	}
	// The checkpoint commits asynchronously (no WAL flush to wait for, one
	// fsync less per relay round): a checkpoint that a crash of Postgres
	// loses only makes the next leader publish its batch again, which
	// delivery at least once allows. It is visible to the other instances
	// at once all the same.
	b := &pgx.Batch{}
	b.BeginTx(pgx.TxOptions{IsoLevel: pgx.ReadCommitted})
	b.Queue(`SET LOCAL synchronous_commit TO off`)
	b.Queue(q, t.table, to.txID, to.position)
	b.Queue(`COMMIT`)
	br := t.pool.SendBatch(ctx, b)
	tx := br.Tx()
	// A no-op after the batch's COMMIT; after a failure it ends the
	// transaction.
	defer func() { _ = tx.Rollback(ctx) }()
	if err := br.Close(); err != nil {
		return fmt.Errorf("error storing the %s checkpoint: %w", t.table, err)
	}
	t.at = to
	return nil
}

// below is the condition every read shares: after the cursor, and only
// transactions older than the oldest one still running. The queries select
// tx_id as text under another name: ORDER BY tx_id must mean the xid8
// column, which sorts as a number (as text, 1000000 sorts before 999999).
const below = `(tx_id, position) > ($1::text::xid8, $2) AND tx_id < pg_snapshot_xmin(pg_current_snapshot())
	ORDER BY tx_id, position LIMIT $3`

func newEventsTable(pool *pgxpool.Pool) *table {
	return &table{
		pool:  pool,
		table: "events",
		lagQuery: `SELECT coalesce((SELECT max(position) FROM events), 0),
		           coalesce((SELECT extract(epoch FROM now() - ts) FROM events WHERE (tx_id, position) > ($1::text::xid8, $2)
		                     ORDER BY events.tx_id, events.position LIMIT 1), 0)::float8`,
		query: `SELECT tx_id::text AS cursor_tx, position, id, subject, seq, type, coalesce(run_id, ''), coalesce(flow_name, ''),
		        coalesce(step_name, ''), coalesce(step_id, ''), attempt, data, ts, coalesce(correlation_id, '')
		        FROM events WHERE ` + below,
		decode: func(rows pgx.Rows) (relayed, error) {
			var r relayed
			var e domain.Event
			var attempt int64
			var data []byte
			var corr string
			if err := rows.Scan(&r.at.txID, &r.at.position, &e.ID, &e.Subject, &e.Seq, &e.Type, &e.RunID, &e.FlowName,
				&e.StepName, &e.StepID, &attempt, &data, &e.TS, &corr); err != nil {
				return r, err
			}
			e.Attempt, e.Data, e.TS = int(attempt), json.RawMessage(data), e.TS.UTC()
			r.change = bus.Change{Kind: bus.KindAppend, ID: e.ID, Event: &e, At: e.TS, CorrelationID: corr}
			return r, nil
		},
	}
}

func newChangesTable(pool *pgxpool.Pool) *table {
	return &table{
		pool:  pool,
		table: "changes",
		lagQuery: `SELECT coalesce((SELECT max(position) FROM changes), 0),
		           coalesce((SELECT extract(epoch FROM now() - at) FROM changes WHERE (tx_id, position) > ($1::text::xid8, $2)
		                     ORDER BY changes.tx_id, changes.position LIMIT 1), 0)::float8`,
		prune: true,
		query: `SELECT tx_id::text AS cursor_tx, position, id, kind, coalesce(collection, ''), coalesce(doc_id, ''), coalesce(key, ''), body, at,
		        coalesce(correlation_id, '')
		        FROM changes WHERE ` + below,
		decode: func(rows pgx.Rows) (relayed, error) {
			var r relayed
			c := &r.change
			var body []byte
			if err := rows.Scan(&r.at.txID, &r.at.position, &c.ID, &c.Kind, &c.Collection, &c.DocumentID, &c.Key, &body, &c.At,
				&c.CorrelationID); err != nil {
				return r, err
			}
			c.At = c.At.UTC()
			switch c.Kind {
			case bus.KindSave:
				c.Document = new(domain.Document)
				return r, json.Unmarshal(body, c.Document)
			case bus.KindKeySet:
				c.Entry = new(domain.KVEntry)
				return r, json.Unmarshal(body, c.Entry)
			}
			return r, nil
		},
	}
}
