package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/nvent/nvent/internal/bus"
	"github.com/nvent/nvent/internal/domain"
	"github.com/nvent/nvent/internal/feed"
	"github.com/nvent/nvent/internal/handlers"
	"github.com/nvent/nvent/internal/logging"
	"github.com/nvent/nvent/internal/relay"
	"github.com/nvent/nvent/internal/router"
	"github.com/nvent/nvent/internal/storage"
	"github.com/nvent/nvent/internal/storage/memory"
	"github.com/nvent/nvent/internal/storage/postgres"
	redisstore "github.com/nvent/nvent/internal/storage/redis"
	"github.com/nvent/nvent/internal/storage/sqlite"
	"github.com/nvent/nvent/internal/stream"
)

// runner holds what a run created, and removes it in reverse order.
type runner struct {
	cfg Config

	mu       sync.Mutex
	cleanups []func()

	schema string // the run's Postgres schema, once created
	prefix string // the run's Redis key prefix, once chosen
	log    *slog.Logger
}

func (r *runner) onCleanup(f func()) {
	r.mu.Lock()
	r.cleanups = append(r.cleanups, f)
	r.mu.Unlock()
}

func (r *runner) cleanup() {
	r.mu.Lock()
	fs := r.cleanups
	r.cleanups = nil
	r.mu.Unlock()
	for i := len(fs) - 1; i >= 0; i-- {
		fs[i]()
	}
}

func (r *runner) logger() *slog.Logger {
	if r.log == nil {
		r.log = slog.New(slog.NewTextHandler(r.cfg.Log, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	return r.log
}

func randomName(prefix string) string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// postgres creates the run's schema (once) and describes the server in m.
func (r *runner) postgres(ctx context.Context, m *Machine) (string, error) {
	if r.schema != "" {
		return r.schema, nil
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(cctx, r.cfg.PostgresURL)
	if err != nil {
		return "", errorf("Postgres is not reachable (set NVENT_POSTGRES_URL): %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var version, syncCommit, fsync, sharedBuffers string
	if err := conn.QueryRow(cctx, `SELECT current_setting('server_version'), current_setting('synchronous_commit'),
		current_setting('fsync'), current_setting('shared_buffers')`).Scan(&version, &syncCommit, &fsync, &sharedBuffers); err == nil && m != nil {
		m.Postgres = fmt.Sprintf("%s (synchronous_commit=%s, fsync=%s, shared_buffers=%s)", version, syncCommit, fsync, sharedBuffers)
	}
	schema := randomName("nvent_bench_")
	if _, err := conn.Exec(cctx, "CREATE SCHEMA "+pgx.Identifier{schema}.Sanitize()); err != nil {
		return "", errorf("creating schema %s: %w", schema, err)
	}
	r.schema = schema
	url := r.cfg.PostgresURL
	r.onCleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, url)
		if err == nil {
			defer conn.Close(ctx)
			_, err = conn.Exec(ctx, "DROP SCHEMA "+pgx.Identifier{schema}.Sanitize()+" CASCADE")
		}
		if err != nil {
			fmt.Fprintf(r.cfg.Log, "bench: error dropping schema %s: %v\n", schema, err)
		}
	})
	return schema, nil
}

// redis chooses the run's key prefix (once), checks that Redis answers,
// describes it in m, and deletes every key under the prefix at cleanup.
func (r *runner) redis(ctx context.Context, m *Machine) (string, error) {
	if r.prefix != "" {
		return r.prefix, nil
	}
	opts, err := redis.ParseURL(r.cfg.RedisURL)
	if err != nil {
		return "", errorf("invalid Redis URL: %w", err)
	}
	c := redis.NewClient(opts)
	defer c.Close()
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := c.Ping(cctx).Err(); err != nil {
		return "", errorf("Redis is not reachable (set NVENT_REDIS_URL): %w", err)
	}
	if m != nil {
		if info, err := c.InfoMap(cctx, "server", "persistence").Result(); err == nil {
			m.Redis = fmt.Sprintf("%s (appendonly=%s)", info["Server"]["redis_version"], info["Persistence"]["aof_enabled"])
		}
	}
	prefix := randomName("nventbench") + ":"
	r.prefix = prefix
	r.onCleanup(func() {
		c := redis.NewClient(opts)
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		iter := c.Scan(ctx, 0, prefix+"*", 100).Iterator()
		for iter.Next(ctx) {
			c.Del(ctx, iter.Val())
		}
		if err := iter.Err(); err != nil {
			fmt.Fprintf(r.cfg.Log, "bench: error deleting the keys under %s: %v\n", prefix, err)
		}
	})
	return prefix, nil
}

// system is nvent under test: a store the bench appends through and a
// subscription to store-sync:append:* whose receipts go to the current
// recorder.
type system struct {
	store storage.Store
	serve *serveProc // nil in process
	recv  atomic.Pointer[Recorder]
}

// startSystem builds nvent as cfg says (see the package doc), subscribes to
// its appends, and proves the pipeline with one probe event.
func (r *runner) startSystem(ctx context.Context, m *Machine) (*system, error) {
	cfg := r.cfg
	sys := &system{}
	scfg := stream.Config{Backend: cfg.Stream, InstanceID: "bench"}
	var pgcfg postgres.Config
	if cfg.Store == "postgres" || cfg.Stream == "postgres" {
		schema, err := r.postgres(ctx, m)
		if err != nil {
			return nil, err
		}
		pgcfg = postgres.Config{URL: cfg.PostgresURL, Schema: schema, MaxConns: int32(cfg.Concurrency + 8), AutoMigrate: true}
	}
	// One fresh prefix names the run's Redis keys (store and stream) and its
	// NATS streams and RabbitMQ exchanges.
	var prefix string
	if cfg.Store == "redis" || cfg.Stream != "memory" {
		var err error
		if prefix, err = r.redis(ctx, m); err != nil {
			return nil, err
		}
	}
	scfg.KeyPrefix = prefix
	switch cfg.Stream {
	case "redis":
		scfg.RedisURL = cfg.RedisURL
	case "nats":
		scfg.NATSURL = cfg.NATSURL
	case "amqp":
		scfg.AMQPURL = cfg.AMQPURL
	case "postgres":
		scfg.PostgresURL, scfg.PostgresSchema = cfg.PostgresURL, pgcfg.Schema
	}
	st, err := stream.New(scfg, logging.Watermill(r.logger()))
	if err != nil {
		return nil, errorf("building the stream: %w", err)
	}
	r.onCleanup(func() { _ = st.Close() })
	r.cleanBrokers(st)
	storeCfg := storeConfig{pg: pgcfg, redis: redisstore.Config{URL: cfg.RedisURL, Prefix: prefix + "store:"}}

	if cfg.twoProcess() {
		store, err := r.openStore(ctx, storeCfg)
		if err != nil {
			return nil, err
		}
		sys.store = store
		proc, err := r.startServe(ctx, storeCfg, scfg)
		if err != nil {
			return nil, err
		}
		sys.serve = proc
	} else {
		store, err := r.inProcess(ctx, storeCfg, st)
		if err != nil {
			return nil, err
		}
		sys.store = store
	}

	sub, err := st.NewSubscriber(stream.Broadcast())
	if err != nil {
		return nil, errorf("subscribing: %w", err)
	}
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	msgs, err := sub.Subscribe(sctx, "store-sync:append:*")
	if err != nil {
		cancel()
		_ = sub.Close()
		return nil, errorf("subscribing: %w", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for msg := range msgs {
			if rec := sys.recv.Load(); rec != nil {
				rec.Receive(msg.UUID)
			}
			msg.Ack()
		}
	}()
	r.onCleanup(func() {
		cancel()
		_ = sub.Close()
		<-done
	})
	return sys, sys.probe(ctx)
}

// probe appends one event and waits until it arrives.
func (s *system) probe(ctx context.Context) error {
	rec := NewRecorder(1)
	s.recv.Store(rec)
	defer s.recv.Store(nil)
	res, err := s.store.Append(ctx, defaultSubjectPrefix+"probe", []domain.NewEvent{{Type: "bench.probe"}}, domain.AppendOptions{})
	if err != nil {
		return errorf("appending the probe event: %w", err)
	}
	rec.Commit(res.Events[0].ID)
	deadline := time.Now().Add(probeTimeout)
	for rec.Latency().Count == 0 {
		if time.Now().After(deadline) {
			return errorf("the probe event did not arrive on the stream within %v", probeTimeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil
}

// inProcess builds the store, its relay (or feed), the bus, and the router
// with the stream coordinator, the way `nvent serve` does (minus HTTP and the
// wirings that consume the stream), and runs them until cleanup. It returns
// the store to append through.
func (r *runner) inProcess(ctx context.Context, sc storeConfig, st *stream.Stream) (storage.Store, error) {
	pgcfg := sc.pg
	log := r.logger()
	wlog := logging.Watermill(log)
	b, closeBus, err := bus.New(wlog)
	if err != nil {
		return nil, err
	}
	r.onCleanup(closeBus)
	life := router.NewLifecycle()
	pub, err := st.NewPublisher()
	if err != nil {
		return nil, errorf("building the stream publisher: %w", err)
	}
	r.onCleanup(func() { _ = pub.Close() })
	// The channels `nvent serve` has on by default.
	// The coordinator writes through a Batch flushed by the relay, as in
	// `nvent serve` (internal/di provideCoordinator).
	batch := stream.NewBatch(pub, 0)
	b.AddFlusher(batch)
	coord := handlers.NewStreamCoordinator(handlers.Channels{StoreSync: true, FlowEvents: true}, b, batch)
	rt, err := router.New(router.Config{}, pub, []router.Wiring{coord}, log, life)
	if err != nil {
		return nil, err
	}

	var store storage.Store
	var producer interface{ Run(context.Context) error }
	switch r.cfg.Store {
	case "memory":
		f := feed.New(memory.New(), b, log, life.Started())
		store, producer = f, f
	case "sqlite":
		dir, err := os.MkdirTemp("", "nvent-bench-")
		if err != nil {
			return nil, err
		}
		r.onCleanup(func() { _ = os.RemoveAll(dir) })
		s, err := sqlite.Open(ctx, sqlite.Config{Path: filepath.Join(dir, "bench.db")})
		if err != nil {
			return nil, errorf("opening the sqlite store: %w", err)
		}
		r.onCleanup(func() { _ = s.Close() })
		store = s
		producer = relay.NewLocal(s, b, relay.Config{}, log, relay.Metrics{}, life.Started(), life.Stopping())
	case "redis":
		s, err := r.openRedisStore(ctx, sc.redis)
		if err != nil {
			return nil, err
		}
		store = s
		producer = relay.NewRedis(s, b, relay.RedisConfig{Owner: "bench"}, log, relay.Metrics{}, life.Started(), life.Stopping())
	case "postgres":
		pool, closePool, err := postgres.NewPool(ctx, pgcfg)
		if err != nil {
			return nil, errorf("opening the store: %w", err)
		}
		r.onCleanup(closePool)
		if _, err := postgres.NewMigrator(pool, pgcfg, nil).Up(ctx); err != nil {
			return nil, errorf("migrating schema %s: %w", pgcfg.Schema, err)
		}
		store = postgres.New(pool)
		producer = relay.New(pool, b, relay.Config{Schema: pgcfg.Schema}, log, relay.Metrics{}, life.Started(), life.Stopping())
	}

	// Stop as the app does: the producer first, then the router.
	rctx, stopRouter := context.WithCancel(context.WithoutCancel(ctx))
	pctx, stopProducer := context.WithCancel(context.WithoutCancel(ctx))
	routerDone, producerDone := make(chan error, 1), make(chan error, 1)
	go func() { routerDone <- rt.Run(rctx) }()
	go func() { producerDone <- producer.Run(pctx) }()
	r.onCleanup(func() {
		stopProducer()
		if err := <-producerDone; err != nil {
			log.Warn("bench: producer", slog.Any("error", err))
		}
		stopRouter()
		if err := <-routerDone; err != nil {
			log.Warn("bench: router", slog.Any("error", err))
		}
	})
	select {
	case <-life.Started():
	case err := <-routerDone:
		routerDone <- err
		return nil, errorf("the router stopped at start: %v", err)
	case <-time.After(30 * time.Second):
		return nil, errorf("the router did not start within 30s")
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return store, nil
}

// drain waits, after the load, until every expected receipt arrived, no
// receipt arrived for drainIdle, or drainMax passed.
func drain(ctx context.Context, rec *Recorder) {
	deadline := time.Now().Add(drainMax)
	last, lastAt := int64(-1), time.Now()
	for time.Now().Before(deadline) {
		c := rec.Counts()
		if c.Received-rec.Strays() >= rec.Expected() {
			return
		}
		if c.Received != last {
			last, lastAt = c.Received, time.Now()
		} else if time.Since(lastAt) > drainIdle {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// poolFor opens a pgx pool on the run's schema (for the baseline).
func (r *runner) poolFor(ctx context.Context, schema string, conns int32) (*pgxpool.Pool, error) {
	pool, closePool, err := postgres.NewPool(ctx, postgres.Config{URL: r.cfg.PostgresURL, Schema: schema, MaxConns: conns})
	if err != nil {
		return nil, err
	}
	r.onCleanup(closePool)
	return pool, nil
}

// storeConfig is where the run's store lives: a Postgres schema or a Redis
// key prefix of its own.
type storeConfig struct {
	pg    postgres.Config
	redis redisstore.Config
}

// openStore opens the store the bench appends through when a second
// process relays (Postgres or Redis).
func (r *runner) openStore(ctx context.Context, sc storeConfig) (storage.Store, error) {
	if r.cfg.Store == "redis" {
		return r.openRedisStore(ctx, sc.redis)
	}
	store, closeStore, err := postgres.Open(ctx, sc.pg, nil)
	if err != nil {
		return nil, errorf("opening the store: %w", err)
	}
	r.onCleanup(closeStore)
	return store, nil
}

// openRedisStore opens the Redis store under the run's prefix, whose keys
// the cleanup of r.redis deletes.
func (r *runner) openRedisStore(ctx context.Context, cfg redisstore.Config) (*redisstore.Store, error) {
	s, err := redisstore.New(cfg)
	if err != nil {
		return nil, errorf("opening the redis store: %w", err)
	}
	r.onCleanup(func() { _ = s.Close() })
	if err := s.Ping(ctx); err != nil {
		return nil, errorf("opening the redis store: %w", err)
	}
	return s, nil
}
