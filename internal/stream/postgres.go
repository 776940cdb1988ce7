package stream

import (
	"context"
	stdsql "database/sql"
	"errors"
	"fmt"
	"math"
	"strconv"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/nvent/nvent/internal/pgnotify"
)

// Defaults of a PostgresConfig.
const (
	DefaultPostgresSchema       = "public"
	DefaultPostgresAckDeadline  = 30 * time.Second
	DefaultPostgresPollInterval = time.Second
	DefaultPostgresMaxConns     = 10
	// PostgresNotifyChannel is the channel publishers NOTIFY after a write
	// commits; the payload is "{schema}.{table}".
	PostgresNotifyChannel = "nvent_stream"
)

// Batch sizes of one reading transaction: broadcast readers are alone on
// their group and read up to 100 rows at a time; members of a competing
// group take one row at a time, so that the group's lock passes between
// them after every message.
const (
	pgBroadcastBatch = 100
	pgCompetingBatch = 1
)

// pgOffsetKey is metadata that the row decoder adds for the reader (which
// removes it): the row's offset, for skipping the rows a new group must not
// see.
const pgOffsetKey = reservedPrefix + "pg_offset"

// PostgresConfig configures the Postgres backend.
type PostgresConfig struct {
	// URL is a pgx connection string. Required.
	URL string
	// Schema holds the stream's tables. Default DefaultPostgresSchema.
	Schema string
	// AckDeadline is how long a delivered message may stay unacked before
	// the reading transaction gives it up and the message is delivered
	// again (for a group: to any member). Default DefaultPostgresAckDeadline.
	AckDeadline time.Duration
	// PollInterval is how often an idle subscription looks for rows that
	// no notification announced (rows written by other means, or a
	// notification lost while reconnecting). Default
	// DefaultPostgresPollInterval.
	PollInterval time.Duration
	// MaxConns bounds the reading connections of one Postgres value (one
	// process): a subscription holds one from the moment it reads a batch
	// until its handler has acked the batch's messages, so more
	// subscriptions than MaxConns with messages in flight wait for each
	// other. Publishers share 4 more, and one more LISTENs. Default
	// DefaultPostgresMaxConns.
	MaxConns int32
}

func (c *PostgresConfig) setDefaults() {
	if c.Schema == "" {
		c.Schema = DefaultPostgresSchema
	}
	if c.AckDeadline == 0 {
		c.AckDeadline = DefaultPostgresAckDeadline
	}
	if c.PollInterval == 0 {
		c.PollInterval = DefaultPostgresPollInterval
	}
	if c.MaxConns == 0 {
		c.MaxConns = DefaultPostgresMaxConns
	}
}

// Validate reports a configuration error.
func (c PostgresConfig) Validate() error {
	if c.URL == "" {
		return errors.New("postgres stream: URL is empty")
	}
	if c.AckDeadline < 0 || c.PollInterval < 0 || c.MaxConns < 0 {
		return errors.New("postgres stream: AckDeadline, PollInterval and MaxConns must not be negative")
	}
	return nil
}

// Postgres keeps the stream in Postgres tables with watermill-sql (pgx
// driver), for deployments with no broker but Postgres. Each physical
// stream is a table of its own, "{Schema}"."watermill_{topic}" (see
// PostgresTable), with its consumer groups' positions in
// "watermill_offsets_{topic}"; rows are read in commit order with
// watermill-sql's (transaction id, offset) cursor below
// pg_snapshot_xmin(pg_current_snapshot()), so a late commit is never
// skipped.
//
// Delivery modes, both on watermill-sql consumer groups:
//
//   - ModeCompeting: the group is the consumer group (Delivery.Group +
//     "@" + pattern). Members take turns: a member takes the group's lock
//     (see pgOffsets), reads one message, waits for its ack and moves the
//     group's position in the same transaction, so each message goes to one
//     member and a group handles one message at a time. A member that dies
//     rolls its transaction back and another member reads the message; one
//     that does not ack within AckDeadline gives it up too. A new group
//     starts after the rows visible when it is created (StartOldest: at the
//     oldest row).
//   - ModeBroadcast: each subscription is a consumer group of its own
//     ("broadcast:{random}"), read without the row lock, deleted when the
//     subscription ends (a process that is killed leaves its row behind; it
//     is a few bytes). It starts after the rows visible when Subscribe runs:
//     rows of transactions that commit later are delivered, whatever their
//     transaction id.
//
// A nack delivers the message again at once (from the same transaction).
// Writers NOTIFY PostgresNotifyChannel after each write commits (from a
// transaction of their own, coalesced, never inside the write), which wakes
// idle readers at once; readers also poll every PollInterval. A row becomes
// readable only once every transaction older than it has ended, so long
// transactions anywhere in the cluster delay delivery (they never lose
// anything). A reading transaction itself gets a transaction id only when
// it writes the ack, so a slow handler delays its own group, not others.
//
// Trimming: every Layout.MaxLen/10 rows it writes to a stream, a writer
// deletes the rows more than MaxLen behind the newest; readers behind that
// skip what was deleted (the store fills such gaps).
//
// The tables store the payload as bytea and the event id as text (not
// watermill-sql's default varchar(36) and json): ids are longer than 36
// characters and rows written by others need not be JSON. A row that cannot
// be decoded is reported as poison and skipped, like an undecodable Redis
// entry.
type Postgres struct {
	cfg    PostgresConfig
	logger watermill.LoggerAdapter
	read   *pgxpool.Pool
	write  *pgxpool.Pool
	listen *pgListener

	mu    sync.Mutex
	ready map[string]bool // streams whose tables exist
}

// NewPostgres checks cfg and builds the connection pools; it does not
// connect (use Ping).
func NewPostgres(cfg PostgresConfig, logger watermill.LoggerAdapter) (*Postgres, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = watermill.NopLogger{}
	}
	pool := func(maxConns int32) (*pgxpool.Pool, *pgxpool.Config, error) {
		pc, err := pgxpool.ParseConfig(cfg.URL)
		if err != nil {
			return nil, nil, fmt.Errorf("postgres stream: invalid URL: %w", err)
		}
		pc.MaxConns = maxConns
		pc.MaxConnIdleTime = time.Minute
		p, err := pgxpool.NewWithConfig(context.Background(), pc)
		if err != nil {
			return nil, nil, fmt.Errorf("error creating postgres pool: %w", err)
		}
		return p, pc, nil
	}
	read, pc, err := pool(cfg.MaxConns)
	if err != nil {
		return nil, err
	}
	write, _, err := pool(4)
	if err != nil {
		read.Close()
		return nil, err
	}
	p := &Postgres{cfg: cfg, logger: logger, read: read, write: write, ready: map[string]bool{}}
	p.listen = &pgListener{conn: pc.ConnConfig, logger: logger, subs: map[string]map[chan struct{}]struct{}{}}
	return p, nil
}

// PostgresTable is the table of a physical stream (in the configured
// schema, unquoted): "watermill_" and the stream name, with bytes other than
// letters, digits and "-$:." written "_XX" and names that would pass
// Postgres' 63-byte limit shortened with a hash. Its consumer groups' table
// is the same with "watermill_offsets_".
func PostgresTable(stream string) string { return "watermill_" + pgTopic(stream) }

func pgTopic(stream string) string {
	return brokerName(stream, func(c byte) bool { return alnumDash(c) || c == '$' || c == ':' || c == '.' }, 44)
}

func (p *Postgres) table(stream string) string { return p.topicTable(pgTopic(stream)) }

// topicTable is the quoted table of a watermill-sql topic (pgTopic).
func (p *Postgres) topicTable(topic string) string {
	return pgx.Identifier{p.cfg.Schema, "watermill_" + topic}.Sanitize()
}

func (p *Postgres) offsetsTable(stream string) string {
	return pgx.Identifier{p.cfg.Schema, "watermill_offsets_" + pgTopic(stream)}.Sanitize()
}

// notifyKey is the NOTIFY payload of writes to stream.
func (p *Postgres) notifyKey(stream string) string { return p.cfg.Schema + "." + PostgresTable(stream) }

// Ping pings Postgres.
func (p *Postgres) Ping(ctx context.Context) error {
	if err := p.write.Ping(ctx); err != nil {
		return fmt.Errorf("error pinging postgres: %w", err)
	}
	return nil
}

// Close stops listening and closes the pools.
func (p *Postgres) Close() error {
	p.listen.stop()
	p.read.Close()
	p.write.Close()
	return nil
}

// ensure creates the tables of stream unless this process did already.
// Concurrent creators (other processes) queue on an advisory lock.
func (p *Postgres) ensure(ctx context.Context, stream string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ready[stream] {
		return nil
	}
	t := p.table(stream)
	idx := pgx.Identifier{PostgresTable(stream) + "_o"}.Sanitize()
	offsets, err := p.offsetsFor(stream, true).SchemaInitializingQueries(wsql.OffsetsSchemaInitializingQueriesParams{Topic: pgTopic(stream)})
	if err != nil {
		return err
	}
	queries := []string{
		fmt.Sprintf("SELECT pg_advisory_xact_lock(%d)", wsql.DefaultSchemaInitializationLock("nvent-stream")),
		`CREATE TABLE IF NOT EXISTS ` + t + ` (
			"offset" BIGSERIAL,
			"uuid" TEXT NOT NULL,
			"created_at" TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
			"payload" BYTEA DEFAULT NULL,
			"metadata" JSON DEFAULT NULL,
			"transaction_id" xid8 NOT NULL,
			PRIMARY KEY ("transaction_id", "offset")
		)`,
		`CREATE INDEX IF NOT EXISTS ` + idx + ` ON ` + t + ` ("offset")`,
		// See pgOffsets. The table name comes from offsetsTable, quoted.
		`CREATE OR REPLACE FUNCTION ` + p.positionFunction() + `(offsets_table text, grp text)
		RETURNS TABLE (offset_acked bigint, last_processed_transaction_id xid8)
		LANGUAGE plpgsql VOLATILE AS $$
		BEGIN
			PERFORM pg_advisory_xact_lock(hashtext('nvent-stream-group'), hashtext(offsets_table || '/' || grp));
			RETURN QUERY EXECUTE 'SELECT offset_acked, last_processed_transaction_id FROM ' || offsets_table || ' WHERE consumer_group = $1' USING grp;
			IF NOT FOUND THEN -- the group vanished: it starts again at the oldest row
				EXECUTE 'INSERT INTO ' || offsets_table || ' (consumer_group, offset_acked, last_processed_transaction_id) VALUES ($1, 0, ''0'') ON CONFLICT DO NOTHING' USING grp;
				RETURN QUERY EXECUTE 'SELECT offset_acked, last_processed_transaction_id FROM ' || offsets_table || ' WHERE consumer_group = $1' USING grp;
			END IF;
		END $$`,
	}
	for _, q := range offsets {
		queries = append(queries, q.Query)
	}
	err = pgx.BeginFunc(ctx, p.write, func(tx pgx.Tx) error {
		for _, q := range queries {
			if _, err := tx.Exec(ctx, q); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("error creating the tables of stream %s: %w", stream, err)
	}
	p.ready[stream] = true
	return nil
}

// pgSchema is watermill-sql's Postgres schema with our table names, bytea
// payloads and text ids, a row decoder that never fails, and READ
// COMMITTED reading transactions (see pgOffsets).
type pgSchema struct {
	wsql.DefaultPostgreSQLSchema
}

// SubscribeIsolationLevel is READ COMMITTED: the rows read are still only
// those below the statement snapshot's xmin (watermill-sql's query), and
// the position comes from pgOffsets.
func (pgSchema) SubscribeIsolationLevel() stdsql.IsolationLevel { return stdsql.LevelReadCommitted }

// UnmarshalMessage decodes a row with decodeEntry: the payload is the
// entry's "message" field and the metadata column its "metadata" field. It
// fails only when the row cannot be scanned.
func (pgSchema) UnmarshalMessage(params wsql.UnmarshalMessageParams) (wsql.Row, error) {
	var r wsql.Row
	var txID wsql.XID8
	var uuid string
	if err := params.Row.Scan(&r.Offset, &txID, &uuid, &r.Payload, &r.Metadata); err != nil {
		return wsql.Row{}, fmt.Errorf("could not scan message row: %w", err)
	}
	r.UUID = []byte(uuid)
	fields := map[string]any{}
	if len(r.Payload) > 0 {
		fields[fieldMessage] = r.Payload
	}
	if r.Metadata != nil {
		fields[fieldMetadata] = r.Metadata
	}
	r.Msg = decodeEntry(fields)
	r.Msg.Metadata[pgOffsetKey] = strconv.FormatInt(r.Offset, 10)
	r.ExtraData = map[string]any{"transaction_id": txID}
	return r, nil
}

// pgOffsets is watermill-sql's offsets adapter with another way to read a
// group's position. watermill-sql locks the group's row (SELECT … FOR
// UPDATE) in a REPEATABLE READ transaction that stays open until the
// handler acks; a row lock gives that transaction a transaction id, which
// holds back pg_snapshot_xmin(pg_current_snapshot()) — and so hides every
// newer row from every reader of the database — for as long as the
// handler runs. Instead:
//
//   - a broadcast group has one reader and reads its position unlocked;
//   - a competing group's members queue on a transaction-scoped advisory
//     lock (which needs no transaction id) inside the function
//     nvent_stream_position, which then reads the position with a snapshot
//     of its own (the reading transaction is READ COMMITTED, see pgSchema),
//     so it sees the last member's ack. A group whose row vanished (deleted
//     by hand) starts again at the oldest row, as a Redis group re-created
//     after NOGROUP does.
//
// The transaction gets an id only when it writes the ack, just before it
// commits.
type pgOffsets struct {
	wsql.DefaultPostgreSQLOffsetsAdapter
	table    string // quoted offsets table
	function string // quoted nvent_stream_position of the schema
	lock     bool
}

func (o pgOffsets) NextOffsetQuery(params wsql.NextOffsetQueryParams) (wsql.Query, error) {
	if o.lock {
		return wsql.Query{
			Query: `SELECT offset_acked, last_processed_transaction_id FROM ` + o.function + `($1, $2)`,
			Args:  []any{o.table, params.ConsumerGroup},
		}, nil
	}
	return wsql.Query{
		Query: `SELECT offset_acked, last_processed_transaction_id FROM ` + o.table + ` WHERE consumer_group = $1`,
		Args:  []any{params.ConsumerGroup},
	}, nil
}

func (p *Postgres) offsetsFor(stream string, lock bool) pgOffsets {
	name := p.offsetsTable(stream)
	return pgOffsets{DefaultPostgreSQLOffsetsAdapter: wsql.DefaultPostgreSQLOffsetsAdapter{
		GenerateMessagesOffsetsTableName: func(string) string { return name },
	}, table: name, function: p.positionFunction(), lock: lock}
}

func (p *Postgres) positionFunction() string {
	return pgx.Identifier{p.cfg.Schema, "nvent_stream_position"}.Sanitize()
}

func (p *Postgres) schemaFor(stream string, batch int) pgSchema {
	name := p.table(stream)
	return pgSchema{DefaultPostgreSQLSchema: wsql.DefaultPostgreSQLSchema{
		GenerateMessagesTableName: func(string) string { return name },
		SubscribeBatchSize:        batch,
	}}
}

// createGroupAtEnd creates a consumer group positioned after every row
// visible now, unless the group exists. When it created the group it also
// returns the offsets of the visible rows that its cursor cannot exclude
// (rows of transactions at or above the snapshot's xmin, which committed
// while an older transaction was still running); the reader skips them.
func (p *Postgres) createGroupAtEnd(ctx context.Context, stream, group string) (map[int64]bool, error) {
	var skip map[int64]bool
	err := pgx.BeginTxFunc(ctx, p.read, pgx.TxOptions{IsoLevel: pgx.RepeatableRead}, func(tx pgx.Tx) error {
		var xmin string
		if err := tx.QueryRow(ctx, `SELECT pg_snapshot_xmin(pg_current_snapshot())::text`).Scan(&xmin); err != nil {
			return err
		}
		x, err := strconv.ParseUint(xmin, 10, 64)
		if err != nil {
			return fmt.Errorf("unexpected xmin %q: %w", xmin, err)
		}
		rows, err := tx.Query(ctx, `SELECT "offset" FROM `+p.table(stream)+` WHERE transaction_id >= $1::text::xid8`, xmin)
		if err != nil {
			return err
		}
		offsets, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `INSERT INTO `+p.offsetsTable(stream)+
			` (consumer_group, offset_acked, last_processed_transaction_id) VALUES ($1, $2, $3::text::xid8) ON CONFLICT DO NOTHING`,
			group, int64(math.MaxInt64), strconv.FormatUint(x-1, 10))
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 1 {
			skip = make(map[int64]bool, len(offsets))
			for _, o := range offsets {
				skip[o] = true
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("error creating consumer group %s of %s: %w", group, stream, err)
	}
	return skip, nil
}

func (p *Postgres) newWriter(layout Layout, logger watermill.LoggerAdapter) (writer, error) {
	pub, err := wsql.NewPublisher(wsql.BeginnerFromPgx(p.write), wsql.PublisherConfig{
		// Only the insert is used: the table name comes with the topic.
		SchemaAdapter: pgInsert{p: p},
	}, logger)
	if err != nil {
		return nil, fmt.Errorf("error creating postgres stream publisher: %w", err)
	}
	return &pgWriter{p: p, layout: layout, logger: logger, pub: pub, written: map[string]int64{}, notify: map[string]*pgnotify.Notifier{}}, nil
}

// pgInsert is the schema adapter of the publisher, which inserts into the
// table of the topic (pgTopic) it is given.
type pgInsert struct {
	pgSchema
	p *Postgres
}

func (s pgInsert) InsertQuery(params wsql.InsertQueryParams) (wsql.Query, error) {
	table := s.p.topicTable(params.Topic)
	return wsql.DefaultPostgreSQLSchema{GenerateMessagesTableName: func(string) string { return table }}.InsertQuery(params)
}

type pgWriter struct {
	p      *Postgres
	layout Layout
	logger watermill.LoggerAdapter
	pub    *wsql.Publisher

	mu      sync.Mutex
	written map[string]int64 // rows written per stream since the last trim
	notify  map[string]*pgnotify.Notifier
}

// write inserts the messages in one statement (one transaction), then
// wakes the readers and trims when it is time.
func (w *pgWriter) write(stream string, wire ...*message.Message) error {
	if err := w.p.ensure(context.Background(), stream); err != nil {
		return err
	}
	if err := w.pub.Publish(pgTopic(stream), wire...); err != nil {
		return err
	}
	w.mu.Lock()
	n, ok := w.notify[stream]
	if !ok {
		n = pgnotify.New(w.p.write, `SELECT pg_notify($1, $2)`, PostgresNotifyChannel, w.p.notifyKey(stream))
		w.notify[stream] = n
	}
	trim := false
	if limit := w.layout.maxLen(stream); limit > 0 {
		w.written[stream] += int64(len(wire))
		if w.written[stream] >= max(limit/10, 1) {
			w.written[stream] = 0
			trim = true
		}
	}
	w.mu.Unlock()
	n.Committed()
	if trim {
		w.trim(stream, w.layout.maxLen(stream))
	}
	return nil
}

// trim deletes the rows more than limit offsets behind the newest. A
// failure is logged: the next trim catches up.
func (w *pgWriter) trim(stream string, limit int64) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	t := w.p.table(stream)
	if _, err := w.p.write.Exec(ctx, `DELETE FROM `+t+` WHERE "offset" <= (SELECT max("offset") FROM `+t+`) - $1`, limit); err != nil {
		w.logger.Error("Error trimming postgres stream", err, watermill.LogFields{"stream": stream})
	}
}

// Close waits for running writes and notifications.
func (w *pgWriter) Close() error {
	err := w.pub.Close()
	w.mu.Lock()
	notifiers := w.notify
	w.mu.Unlock()
	for _, n := range notifiers {
		n.Wait()
	}
	return err
}

func (p *Postgres) newReader(layout Layout, logger watermill.LoggerAdapter) (reader, error) {
	return &pgReader{p: p, logger: logger}, nil
}

type pgReader struct {
	p      *Postgres
	logger watermill.LoggerAdapter
	wg     sync.WaitGroup
}

// read positions its consumer group (see Postgres) before it returns.
func (r *pgReader) read(ctx context.Context, stream string, spec readSpec) (<-chan *message.Message, error) {
	p := r.p
	if err := p.ensure(ctx, stream); err != nil {
		return nil, err
	}
	group, batch, broadcast := spec.group, pgCompetingBatch, spec.group == ""
	if broadcast {
		group, batch = "broadcast:"+watermill.NewShortUUID(), pgBroadcastBatch
	}
	var skip map[int64]bool
	if !spec.oldest {
		var err error
		if skip, err = p.createGroupAtEnd(ctx, stream, group); err != nil {
			return nil, err
		}
	}
	wake, unregister := p.listen.register(p.notifyKey(stream))
	deadline := p.cfg.AckDeadline
	sub, err := wsql.NewSubscriber(wsql.BeginnerFromPgx(p.read), wsql.SubscriberConfig{
		ConsumerGroup:  group,
		AckDeadline:    &deadline,
		ResendInterval: time.Nanosecond, // a nacked message comes again at once
		BackoffManager: &pgBackoff{ctx: ctx, wake: wake, poll: p.cfg.PollInterval, retry: time.Second, logger: r.logger},
		SchemaAdapter:  p.schemaFor(stream, batch),
		OffsetsAdapter: p.offsetsFor(stream, !broadcast),
	}, r.logger)
	if err != nil {
		unregister()
		return nil, fmt.Errorf("error creating postgres stream subscriber: %w", err)
	}
	in, err := sub.Subscribe(ctx, pgTopic(stream))
	if err != nil {
		unregister()
		_ = sub.Close()
		return nil, fmt.Errorf("error subscribing to %s: %w", stream, err)
	}
	out := make(chan *message.Message)
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer close(out)
		defer unregister()
		defer func() {
			_ = sub.Close()
			if broadcast {
				dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				if _, err := p.read.Exec(dctx, `DELETE FROM `+p.offsetsTable(stream)+` WHERE consumer_group = $1`, group); err != nil {
					r.logger.Error("Error deleting broadcast consumer group", err, watermill.LogFields{"group": group})
				}
			}
		}()
		for msg := range in {
			off, marked := msg.Metadata[pgOffsetKey]
			delete(msg.Metadata, pgOffsetKey)
			if marked && len(skip) > 0 {
				if o, err := strconv.ParseInt(off, 10, 64); err == nil && skip[o] {
					delete(skip, o)
					msg.Ack()
					continue
				}
			}
			select {
			case out <- msg:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}

// Close waits for the reads (whose ctx must be done).
func (r *pgReader) Close() error {
	r.wg.Wait()
	return nil
}

// pgBackoff is the watermill-sql BackoffManager of one read: after a read
// that found nothing it waits for a notification of the stream, PollInterval,
// or the end of the read, and returns 0 (no further sleep). For half a
// second after a notification it polls every 20ms instead, since rows
// announced may not be readable yet (an older transaction still runs).
// Serialization failures (members of a group racing for its row) are
// retried at once, other errors after retry.
type pgBackoff struct {
	ctx    context.Context
	wake   <-chan struct{}
	poll   time.Duration
	retry  time.Duration
	logger watermill.LoggerAdapter

	hotUntil time.Time
}

func (b *pgBackoff) HandleError(logger watermill.LoggerAdapter, noMsg bool, err error) time.Duration {
	if b.ctx.Err() != nil {
		return 0
	}
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && (pgErr.Code == "40001" || pgErr.Code == "40P01") {
			return 0
		}
		b.logger.Error("Error reading postgres stream, retrying", err, watermill.LogFields{"wait": b.retry})
		return b.retry
	}
	if !noMsg {
		return 0
	}
	wait := b.poll
	if time.Now().Before(b.hotUntil) {
		wait = min(wait, 20*time.Millisecond)
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-b.wake:
		b.hotUntil = time.Now().Add(500 * time.Millisecond)
	case <-t.C:
	case <-b.ctx.Done():
	}
	return 0
}

// pgListener LISTENs on PostgresNotifyChannel on a connection of its own,
// started by the first register, and wakes the readers registered for the
// payload. After (re)connecting it wakes every reader, since notifications
// may have been missed.
type pgListener struct {
	conn   *pgx.ConnConfig
	logger watermill.LoggerAdapter

	mu      sync.Mutex
	subs    map[string]map[chan struct{}]struct{}
	started bool
	stopped bool
	cancel  context.CancelFunc
	done    chan struct{}
}

// register returns a channel that receives (without blocking the listener;
// at most one pending) when key is notified, and a function that ends the
// registration.
func (l *pgListener) register(key string) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopped {
		return ch, func() {}
	}
	if !l.started {
		l.started = true
		ctx, cancel := context.WithCancel(context.Background())
		l.cancel, l.done = cancel, make(chan struct{})
		go l.run(ctx)
	}
	if l.subs[key] == nil {
		l.subs[key] = map[chan struct{}]struct{}{}
	}
	l.subs[key][ch] = struct{}{}
	return ch, func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		delete(l.subs[key], ch)
		if len(l.subs[key]) == 0 {
			delete(l.subs, key)
		}
	}
}

func (l *pgListener) wake(key string, all bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for k, chans := range l.subs {
		if all || k == key {
			for ch := range chans {
				select {
				case ch <- struct{}{}:
				default:
				}
			}
		}
	}
}

func (l *pgListener) run(ctx context.Context) {
	defer close(l.done)
	for {
		err := l.listen(ctx)
		if ctx.Err() != nil {
			return
		}
		l.logger.Error("Error listening for postgres stream notifications, listening again in 1s", err, nil)
		select {
		case <-time.After(time.Second):
		case <-ctx.Done():
			return
		}
	}
}

func (l *pgListener) listen(ctx context.Context) error {
	conn, err := pgx.ConnectConfig(ctx, l.conn.Copy())
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{PostgresNotifyChannel}.Sanitize()); err != nil {
		return err
	}
	l.wake("", true)
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		l.wake(n.Payload, false)
	}
}

// stop ends the listener and waits for it.
func (l *pgListener) stop() {
	l.mu.Lock()
	l.stopped = true
	cancel, done := l.cancel, l.done
	l.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}
