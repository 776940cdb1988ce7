// Package di builds nvent's object graph with google/wire. wire.go declares
// the injectors (build tag wireinject); wire_gen.go is generated from it by
// `go tool wire ./internal/di` and committed.
package di

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/wire"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/nvent/nvent/internal/app"
	"github.com/nvent/nvent/internal/bus"
	"github.com/nvent/nvent/internal/cache"
	"github.com/nvent/nvent/internal/config"
	"github.com/nvent/nvent/internal/dashboard"
	"github.com/nvent/nvent/internal/domain"
	"github.com/nvent/nvent/internal/feed"
	"github.com/nvent/nvent/internal/flows"
	"github.com/nvent/nvent/internal/handlers"
	"github.com/nvent/nvent/internal/httpapi"
	"github.com/nvent/nvent/internal/live"
	"github.com/nvent/nvent/internal/logging"
	"github.com/nvent/nvent/internal/metrics"
	"github.com/nvent/nvent/internal/relay"
	"github.com/nvent/nvent/internal/router"
	"github.com/nvent/nvent/internal/storage"
	"github.com/nvent/nvent/internal/storage/memory"
	"github.com/nvent/nvent/internal/storage/postgres"
	redisstore "github.com/nvent/nvent/internal/storage/redis"
	"github.com/nvent/nvent/internal/storage/sqlite"
	"github.com/nvent/nvent/internal/stream"
)

// StoreSet provides the configured storage adapter.
var StoreSet = wire.NewSet(provideAdapter, providePostgresConfig, providePostgresPool)

// StreamSet provides the stream of the configured backend.
var StreamSet = wire.NewSet(provideWatermillLogger, provideStream)

// WiringSet provides the router and every wiring. A new wiring is a file in
// internal/handlers, its provider here, and a parameter of provideWirings.
var WiringSet = wire.NewSet(
	bus.New, provideStreamPublisher, provideChannels, provideMetrics,
	provideCoordinator, provideCacheInvalidation, provideFlowRuns,
	provideWirings, provideRouter, provideRelay, router.NewLifecycle,
	provideHub, provideLiveEndpoints, provideTrigger, provideWebhook, provideFlowsAPI,
)

// ServerSet provides the HTTP API, the store stack behind it and the App.
var ServerSet = wire.NewSet(
	provideAPIConfig, provideReadinessChecks, httpapi.New, provideApp,
	provideFeed, providePublished, provideCache, wire.Bind(new(storage.Store), new(*cache.Store)),
)

// providePostgresConfig maps the configuration onto the Postgres adapter's.
func providePostgresConfig(cfg config.Config) postgres.Config {
	return postgres.Config{
		URL:         cfg.PostgresURL,
		Schema:      cfg.PostgresSchema,
		MaxConns:    cfg.PostgresMaxConns,
		AutoMigrate: cfg.PostgresAutomigrate,
	}
}

// Adapter is the storage adapter itself, before the feed and the cache.
type Adapter storage.Store

// Published is the store whose changes reach the bus: the adapter itself
// for Postgres, SQLite and Redis (a relay reads them from the database or
// the outbox stream), the feed around it for memory.
type Published storage.Store

// relayRunner is the durable relay of the configured store, or nil (memory).
type relayRunner app.Runner

// providePostgresPool opens the Postgres pool when the store is Postgres,
// and gives nil otherwise.
func providePostgresPool(ctx context.Context, cfg config.Config, pg postgres.Config) (*pgxpool.Pool, func(), error) {
	if cfg.Store != "postgres" {
		return nil, func() {}, nil
	}
	return postgres.NewPool(ctx, pg)
}

// provideAdapter opens the adapter that cfg.Store names; for Postgres it
// applies pending migrations first unless automigrate is off. The Redis
// store has a client of its own: closing a stream never closes it.
func provideAdapter(ctx context.Context, cfg config.Config, pool *pgxpool.Pool, pg postgres.Config, log *slog.Logger) (Adapter, func(), error) {
	switch cfg.Store {
	case "memory":
		return memory.Provide()
	case "sqlite":
		return sqlite.Provide(ctx, sqlite.Config{Path: cfg.SQLitePath})
	case "postgres":
		if pg.AutoMigrate {
			if _, err := postgres.NewMigrator(pool, pg, log).Up(ctx); err != nil {
				return nil, nil, err
			}
		}
		return postgres.New(pool), func() {}, nil
	case "redis":
		return redisstore.Provide(redisstore.Config{URL: cfg.RedisURL, Prefix: cfg.RedisStorePrefix})
	}
	return nil, nil, fmt.Errorf("unknown store %q", cfg.Store)
}

// provideFeed wraps the memory store in the feed; nil for the stores that
// have a relay.
func provideFeed(cfg config.Config, a Adapter, b *bus.Bus, life *router.Lifecycle, log *slog.Logger) *feed.Store {
	if cfg.Store != "memory" {
		return nil
	}
	return feed.New(a, b, log, life.Started())
}

// providePublished is the store the API and the wirings use (before the
// cache), with its appends measured.
func providePublished(cfg config.Config, a Adapter, f *feed.Store, m *metrics.Metrics) Published {
	var s storage.Store = a
	if f != nil {
		s = f
	}
	return m.InstrumentStore(s, cfg.Store)
}

// provideRelay builds the durable relay of the store: the leader-elected
// Postgres relay, the local SQLite relay, the leader-elected Redis outbox
// relay, or nil for memory.
func provideRelay(cfg config.Config, pool *pgxpool.Pool, a Adapter, b *bus.Bus, life *router.Lifecycle, m *metrics.Metrics, log *slog.Logger) relayRunner {
	rm := relay.Metrics{
		Relayed:    func(table string, n int) { m.RelayRows.WithLabelValues(table).Add(float64(n)) },
		Leading:    func(on bool) { m.RelayLeader.Set(map[bool]float64{true: 1}[on]) },
		Checkpoint: func(table string, pos int64) { m.RelayCheckpoint.WithLabelValues(table).Set(float64(pos)) },
		Lag: func(table string, n int64, age time.Duration) {
			m.RelayLagEvents.WithLabelValues(table).Set(float64(n))
			m.RelayLagSeconds.WithLabelValues(table).Set(age.Seconds())
		},
	}
	switch cfg.Store {
	case "postgres":
		return relay.New(pool, b, relay.Config{Schema: cfg.PostgresSchema}, log, rm, life.Started(), life.Stopping())
	case "sqlite":
		if outbox, ok := a.(relay.Outbox); ok {
			return relay.NewLocal(outbox, b, relay.Config{}, log, rm, life.Started(), life.Stopping())
		}
	case "redis":
		if outbox, ok := a.(relay.RedisOutbox); ok {
			return relay.NewRedis(outbox, b, relay.RedisConfig{Owner: cfg.InstanceID}, log, rm, life.Started(), life.Stopping())
		}
	}
	return nil
}

// provideCache fronts the store with the read cache.
func provideCache(p Published, cfg config.Config, m *metrics.Metrics) *cache.Store {
	c := cache.New(p, cfg.CacheSize)
	m.RegisterCache(func() (uint64, uint64, uint64) {
		st := c.Stats()
		return st.Hits, st.Misses, st.Invalidations
	})
	return c
}

// provideMigrator returns the Postgres migrator over its own pool.
func provideMigrator(ctx context.Context, pg postgres.Config, log *slog.Logger) (*postgres.Migrator, func(), error) {
	pool, cleanup, err := postgres.NewPool(ctx, pg)
	if err != nil {
		return nil, nil, err
	}
	return postgres.NewMigrator(pool, pg, log), cleanup, nil
}

func provideWatermillLogger(log *slog.Logger) watermill.LoggerAdapter {
	return logging.Watermill(log)
}

// provideStream builds the configured stream backend.
func provideStream(cfg config.Config, wlog watermill.LoggerAdapter) (*stream.Stream, func(), error) {
	s, err := stream.New(stream.Config{
		Backend:        cfg.Stream,
		RedisURL:       cfg.RedisURL,
		NATSURL:        cfg.NATSURL,
		AMQPURL:        cfg.AMQPURL,
		PostgresURL:    cfg.PostgresURL,
		PostgresSchema: cfg.PostgresSchema,
		KeyPrefix:      cfg.StreamPrefix,
		InstanceID:     cfg.InstanceID,
	}, wlog)
	if err != nil {
		return nil, nil, fmt.Errorf("error creating stream: %w", err)
	}
	return s, func() { _ = s.Close() }, nil
}

func provideStreamPublisher(s *stream.Stream) (*stream.Publisher, func(), error) {
	p, err := s.NewPublisher()
	if err != nil {
		return nil, nil, err
	}
	return p, func() { _ = p.Close() }, nil
}

func provideChannels(cfg config.Config) handlers.Channels {
	return handlers.Channels{StoreSync: cfg.StoreSync, FlowEvents: cfg.FlowEvents, ClientMessages: cfg.ClientMessages}
}

func provideMetrics() *metrics.Metrics { return metrics.New() }

// provideCoordinator builds the stream coordinator over a stream.Batch, so
// that its handlers acknowledge bus messages at once and the producer (the
// relay, the feed) writes a whole batch to the stream in one round trip
// with bus.Flush before it counts the batch as delivered.
func provideCoordinator(ch handlers.Channels, b *bus.Bus, p *stream.Publisher, m *metrics.Metrics) *handlers.StreamCoordinator {
	batch := stream.NewBatch(p, 0)
	b.AddFlusher(batch)
	c := handlers.NewStreamCoordinator(ch, b, batch)
	c.ObservePublishes(func(channel string, err error) {
		result := "ok"
		if err != nil {
			result = "failed"
		}
		m.StreamPublishes.WithLabelValues(channel, result).Inc()
	})
	return c
}

func provideCacheInvalidation(s *stream.Stream, c *cache.Store, m *metrics.Metrics) (*handlers.CacheInvalidation, func(), error) {
	sub, err := s.NewSubscriber(stream.Broadcast())
	if err != nil {
		return nil, nil, err
	}
	counters := handlers.StoreSyncCounters{
		Received:      m.StoreSync.WithLabelValues("received"),
		Appends:       m.StoreSync.WithLabelValues("append"),
		Gaps:          m.StoreSync.WithLabelValues("gap"),
		Duplicates:    m.StoreSync.WithLabelValues("duplicate"),
		Invalidations: m.StoreSync.WithLabelValues("invalidation"),
	}
	return handlers.NewCacheInvalidation(sub, c, counters), func() { _ = sub.Close() }, nil
}

// provideFlowRuns keeps run documents; it publishes status changes on
// client:ui:runs only when the client-messages channel is on.
func provideFlowRuns(cfg config.Config, s *stream.Stream, store storage.Store, p *stream.Publisher, m *metrics.Metrics) (*handlers.FlowRuns, func(), error) {
	sub, err := s.NewSubscriber(stream.Competing(handlers.FlowRunsGroup))
	if err != nil {
		return nil, nil, err
	}
	var status message.Publisher // nil: no status messages
	if cfg.ClientMessages {
		status = p
	}
	return handlers.NewFlowRuns(sub, store, status, m.WiringMessages.WithLabelValues(handlers.FlowRunsGroup)), func() { _ = sub.Close() }, nil
}

// provideTrigger starts a flow once per flow.trigger event.
func provideTrigger(s *stream.Stream, store storage.Store, m *metrics.Metrics) (*handlers.Trigger, func(), error) {
	sub, err := s.NewSubscriber(stream.Competing(handlers.TriggersGroup))
	if err != nil {
		return nil, nil, err
	}
	return handlers.NewTrigger(sub, store, m.WiringMessages.WithLabelValues(handlers.TriggersGroup)), func() { _ = sub.Close() }, nil
}

// provideWebhook posts flow.completed events to NVENT_WEBHOOK_URL; without
// a URL it is a wiring that registers nothing.
func provideWebhook(cfg config.Config, s *stream.Stream, m *metrics.Metrics) (*handlers.Webhook, func(), error) {
	wc := handlers.WebhookConfig{URL: cfg.WebhookURL, Timeout: cfg.WebhookTimeout}
	delivered := m.WiringMessages.WithLabelValues(handlers.WebhookGroup)
	if wc.URL == "" {
		w, err := handlers.NewWebhook(wc, nil, delivered)
		return w, func() {}, err
	}
	sub, err := s.NewSubscriber(stream.Competing(handlers.WebhookGroup))
	if err != nil {
		return nil, nil, err
	}
	w, err := handlers.NewWebhook(wc, sub, delivered)
	if err != nil {
		_ = sub.Close()
		return nil, nil, err
	}
	return w, func() { _ = sub.Close() }, nil
}

func provideFlowsAPI(cfg config.Config, store storage.Store, log *slog.Logger) *flows.API {
	return flows.New(flows.Config{MaxBodyBytes: cfg.MaxBodyBytes, BodyTimeout: cfg.HTTPBodyTimeout, Limits: limitsOf(cfg)}, store, log)
}

// limitsOf is the configuration's limits on what one request may ask.
func limitsOf(cfg config.Config) domain.Limits {
	return domain.Limits{
		MaxBatchEvents: cfg.MaxBatchEvents, MaxEventDataBytes: cfg.MaxEventDataBytes,
		MaxSubjectBytes: cfg.MaxSubjectBytes, MaxKeyBytes: cfg.MaxKeyBytes, MaxPageSize: cfg.MaxPageSize,
	}
}

// provideWirings lists the wirings the router runs.
func provideWirings(c *handlers.StreamCoordinator, ci *handlers.CacheInvalidation, fr *handlers.FlowRuns,
	tr *handlers.Trigger, wh *handlers.Webhook) []router.Wiring {
	return []router.Wiring{c, ci, fr, tr, wh}
}

func provideRouter(p *stream.Publisher, w []router.Wiring, log *slog.Logger, life *router.Lifecycle, m *metrics.Metrics) (*router.Router, error) {
	return router.New(router.Config{OnPoison: m.Poisoned.Inc}, p, w, log, life)
}

func provideAPIConfig(cfg config.Config) httpapi.Config {
	return httpapi.Config{MaxBodyBytes: cfg.MaxBodyBytes, BodyTimeout: cfg.HTTPBodyTimeout, AuthToken: cfg.AuthToken, Limits: limitsOf(cfg)}
}

// provideReadinessChecks lists what /readyz checks besides the store.
func provideReadinessChecks(cfg config.Config, s *stream.Stream, rl relayRunner) []httpapi.Check {
	checks := []httpapi.Check{{Name: "stream", Check: s.Ping}}
	if st, ok := rl.(interface{ Stalled(time.Duration) error }); ok {
		checks = append(checks, httpapi.Check{Name: "relay", Check: func(context.Context) error { return st.Stalled(cfg.RelayStallThreshold) }})
	}
	return checks
}

// provideHub is this instance's one stream subscription for browsers.
func provideHub(s *stream.Stream, log *slog.Logger) (*live.Hub, func(), error) {
	sub, err := s.NewSubscriber(stream.Broadcast())
	if err != nil {
		return nil, nil, err
	}
	return live.NewHub(sub, log), func() { _ = sub.Close() }, nil
}

func provideLiveEndpoints(cfg config.Config, h *live.Hub, store storage.Store, m *metrics.Metrics, log *slog.Logger) *live.Endpoints {
	return live.NewEndpoints(h, store, live.Config{
		QueueSize: cfg.LiveQueueSize, ClientMessages: cfg.ClientMessages, InstanceID: cfg.InstanceID,
		MaxSubscriptions: cfg.LiveMaxSubscriptions, MaxPatternBytes: cfg.LiveMaxPatternBytes, MaxPatternStars: cfg.LiveMaxPatternStars,
	}, log, live.Counters{
		Connections: func(kind string, d int) { m.LiveConnections.WithLabelValues(kind).Add(float64(d)) },
		SlowClients: func(kind string) { m.SlowClients.WithLabelValues(kind).Inc() },
	}, live.ScopeByRun(httpapi.RunScope), cfg.LiveMaxConnections)
}

func provideApp(cfg config.Config, api *httpapi.API, m *metrics.Metrics, r *router.Router, f *feed.Store, rl relayRunner,
	hub *live.Hub, le *live.Endpoints, fl *flows.API, log *slog.Logger) *app.App {
	app.Mount(api, m.Handler(), dashboard.Handler(), fl, le)
	producers := []app.Runner{hub}
	if f != nil {
		producers = append(producers, f)
	}
	if rl != nil {
		producers = append(producers, rl)
	}
	a := app.New(cfg.HTTPAddr, api, log, cfg.ShutdownTimeout, r, producers...)
	a.SetHTTP(app.HTTPConfig{ReadHeaderTimeout: cfg.HTTPReadHeaderTimeout, IdleTimeout: cfg.HTTPIdleTimeout, MaxHeaderBytes: cfg.HTTPMaxHeaderBytes})
	a.OnShutdown(le.Shutdown)
	return a
}
