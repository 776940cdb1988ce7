// Package router runs nvent's Watermill router: the one place where bus and
// stream messages are handled. Its handlers come from wirings — sets of
// handlers that each do one job (route changes to the stream, invalidate a
// cache, keep flow runs, …) — registered at start and stopped together.
//
// Every handler runs behind the same middleware, outermost first: the
// poison queue (a message that still fails after the retries is published,
// with the reason, on the poison topic — or, if even that fails, logged —
// and acknowledged, so that it never blocks the messages after it), the
// recoverer (a panic becomes an error), and the retry (with exponential
// backoff). An error classified unavailable (domain.ErrUnavailable: the
// stream or the store cannot be reached) is not the message's fault: after
// the retries the message is nacked and delivered again, never poisoned.
package router

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"

	"github.com/nvent/nvent/internal/domain"
	"github.com/nvent/nvent/internal/logging"
)

// Wiring is a set of router handlers with one job. Register adds its
// handlers to r; they start when the router runs and stop when it closes.
// A wiring that needs to stop early keeps the *message.Handler values that
// Register created and calls Stop on them.
type Wiring interface {
	Name() string
	Register(r *message.Router) error
}

// Config tunes the router.
type Config struct {
	// PoisonTopic receives messages that failed every retry. Default
	// "poison:router".
	PoisonTopic string
	// MaxRetries is how often a failing message is retried. Default 3.
	MaxRetries int
	// RetryInterval is the first backoff; it doubles up to 1s. Default 50ms.
	RetryInterval time.Duration
	// CloseTimeout bounds how long Close waits for handlers. Default 10s.
	CloseTimeout time.Duration
	// OnPoison, when set, is called for every message set aside.
	OnPoison func()
}

func (c *Config) setDefaults() {
	if c.PoisonTopic == "" {
		c.PoisonTopic = "poison:router"
	}
	if c.MaxRetries == 0 {
		c.MaxRetries = 3
	}
	if c.RetryInterval == 0 {
		c.RetryInterval = 50 * time.Millisecond
	}
	if c.CloseTimeout == 0 {
		c.CloseTimeout = 10 * time.Second
	}
}

// Lifecycle tells the bus's producers (the feed, the relay) when the router
// consumes: they publish only once it has started (a GoChannel drops a
// message that finds no subscriber), and a publish that returns once it is
// stopping may not have been handled.
type Lifecycle struct {
	started, stopping chan struct{}
}

// NewLifecycle returns the lifecycle of a router not yet running.
func NewLifecycle() *Lifecycle {
	return &Lifecycle{started: make(chan struct{}), stopping: make(chan struct{})}
}

// Started is closed once every handler is subscribed.
func (l *Lifecycle) Started() <-chan struct{} { return l.started }

// Stopping is closed once the router begins to close.
func (l *Lifecycle) Stopping() <-chan struct{} { return l.stopping }

// Router is the configured Watermill router with its wirings.
type Router struct {
	r       *message.Router
	wirings []Wiring
	log     *slog.Logger
	life    *Lifecycle
}

// New builds the router; poison receives the messages that fail for good.
// Wirings are registered by Run, which reports its progress on life.
func New(cfg Config, poison message.Publisher, wirings []Wiring, log *slog.Logger, life *Lifecycle) (*Router, error) {
	cfg.setDefaults()
	wlog := logging.Watermill(log)
	r, err := message.NewRouter(message.RouterConfig{CloseTimeout: cfg.CloseTimeout}, wlog)
	if err != nil {
		return nil, fmt.Errorf("error creating router: %w", err)
	}
	onPoison := cfg.OnPoison
	if onPoison == nil {
		onPoison = func() {}
	}
	pq, err := middleware.PoisonQueueWithFilter(lastResort{poison, log, onPoison}, cfg.PoisonTopic, func(err error) bool {
		// An unavailable stream or store is not the message's fault: it is
		// nacked and comes again, never set aside.
		return !errors.Is(err, domain.ErrUnavailable)
	})
	if err != nil {
		return nil, fmt.Errorf("error creating poison queue: %w", err)
	}
	r.AddMiddleware(
		pq,
		middleware.Recoverer,
		middleware.Retry{
			MaxRetries:      cfg.MaxRetries,
			InitialInterval: cfg.RetryInterval,
			MaxInterval:     time.Second,
			Multiplier:      2,
			Logger:          wlog,
		}.Middleware,
	)
	return &Router{r: r, wirings: wirings, log: log, life: life}, nil
}

// Run registers every wiring and runs the router until ctx ends, then
// closes it, waiting for in-flight handlers up to the close timeout.
func (rt *Router) Run(ctx context.Context) error {
	for _, w := range rt.wirings {
		if err := w.Register(rt.r); err != nil {
			return fmt.Errorf("error registering wiring %s: %w", w.Name(), err)
		}
		rt.log.Debug("wiring registered", slog.String("wiring", w.Name()))
	}
	// The router's own context ends only after Stopping is closed: the bus
	// closes its subscriptions when that context ends, which lets a blocked
	// Publish return, and a producer must by then know not to trust it.
	rctx, rcancel := context.WithCancel(context.WithoutCancel(ctx))
	defer rcancel()
	errc := make(chan error, 1)
	go func() { errc <- rt.r.Run(rctx) }()
	go func() {
		select {
		case <-rt.r.Running():
			close(rt.life.started)
		case <-rctx.Done():
		}
	}()
	var err error
	select {
	case <-ctx.Done():
		close(rt.life.stopping)
		err = rt.r.Close()
		rcancel()
		err = errors.Join(err, <-errc)
	case err = <-errc:
		close(rt.life.stopping)
		_ = rt.r.Close()
	}
	return err
}

// lastResort publishes poisoned messages and, when that fails too (the
// stream is down), logs them instead of failing: a message that cannot be
// handled or set aside must still not block the ones after it.
type lastResort struct {
	pub      message.Publisher
	log      *slog.Logger
	poisoned func()
}

func (l lastResort) Publish(topic string, msgs ...*message.Message) error {
	for range msgs {
		l.poisoned()
	}
	if err := l.pub.Publish(topic, msgs...); err != nil {
		for _, m := range msgs {
			l.log.Error("message failed and could not be set aside on the poison topic; dropped",
				slog.String("message", m.UUID), slog.String("reason", m.Metadata.Get(middleware.ReasonForPoisonedKey)),
				slog.String("topic", m.Metadata.Get(middleware.PoisonedTopicKey)), slog.Any("error", err))
		}
	}
	return nil
}

func (l lastResort) Close() error { return nil }

// Running is closed once every handler is running.
func (rt *Router) Running() chan struct{} { return rt.r.Running() }
