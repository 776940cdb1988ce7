// Package app runs nvent's serve command: the HTTP server, the router that
// consumes the bus, and the producers that feed the bus (the relay, the
// feed), until the context ends. It then stops them in order: the HTTP
// server first (no new writes), then the producers (the relay finishes and
// checkpoints what the router is handling), then the router — all within
// the shutdown timeout.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"
)

// Runner is a background part of the service. Run blocks until ctx ends or
// the part fails.
type Runner interface {
	Run(ctx context.Context) error
}

// Consumer is the part that consumes the bus (the router). Running is
// closed once it consumes: the HTTP server accepts requests only then.
type Consumer interface {
	Runner
	Running() chan struct{}
}

// App is a configured nvent server, ready to Run.
type App struct {
	addr            string
	handler         http.Handler
	log             *slog.Logger
	shutdownTimeout time.Duration
	http            HTTPConfig
	consumer        Consumer
	producers       []Runner
	onShutdown      []func()
}

// HTTPConfig tunes the HTTP server against slow and idle clients.
type HTTPConfig struct {
	// ReadHeaderTimeout drops a connection whose request line and headers
	// have not all arrived within it (a slow-loris client, or one that
	// connects and sends nothing). Default 10s.
	ReadHeaderTimeout time.Duration
	// IdleTimeout closes a keep-alive connection that waits this long for
	// its next request. Default 120s.
	IdleTimeout time.Duration
	// MaxHeaderBytes caps the request line and headers; beyond it the
	// server answers 431. Default 64 KiB.
	MaxHeaderBytes int
}

func (c *HTTPConfig) setDefaults() {
	if c.ReadHeaderTimeout <= 0 {
		c.ReadHeaderTimeout = 10 * time.Second
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 120 * time.Second
	}
	if c.MaxHeaderBytes <= 0 {
		c.MaxHeaderBytes = 64 << 10
	}
}

// SetHTTP tunes the HTTP server (see HTTPConfig); zero fields keep their
// defaults. Call it before Run.
func (a *App) SetHTTP(c HTTPConfig) {
	c.setDefaults()
	a.http = c
}

// OnShutdown registers f to be called when the HTTP server starts shutting
// down: long-lived requests (SSE, WebSocket) must end themselves.
func (a *App) OnShutdown(f func()) { a.onShutdown = append(a.onShutdown, f) }

// New returns an App serving handler on addr, with the bus's consumer and
// its producers.
func New(addr string, handler http.Handler, log *slog.Logger, shutdownTimeout time.Duration, consumer Consumer, producers ...Runner) *App {
	a := &App{addr: addr, handler: handler, log: log, shutdownTimeout: shutdownTimeout, consumer: consumer, producers: producers}
	a.http.setDefaults()
	return a
}

// part runs one Runner under a context of its own.
type part struct {
	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

func start(ctx context.Context, r Runner, failed func()) *part {
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	p := &part{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		if p.err = r.Run(ctx); p.err != nil {
			failed()
		}
	}()
	return p
}

// stop cancels the part and waits for it until deadline ends.
func (p *part) stop(deadline context.Context) error {
	p.cancel()
	select {
	case <-p.done:
		return p.err
	case <-deadline.Done():
		return errors.New("did not stop within the shutdown timeout")
	}
}

// Run listens and serves until ctx ends or a part fails, then shuts down in
// order (see the package doc). ready, when not nil, is called with the
// bound address once the server accepts requests.
func (a *App) Run(ctx context.Context, ready func(addr net.Addr)) error {
	ln, err := net.Listen("tcp", a.addr)
	if err != nil {
		return fmt.Errorf("error listening on %s: %w", a.addr, err)
	}
	srv := &http.Server{
		Handler:           a.handler,
		ReadHeaderTimeout: a.http.ReadHeaderTimeout,
		IdleTimeout:       a.http.IdleTimeout,
		MaxHeaderBytes:    a.http.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	for _, f := range a.onShutdown {
		srv.RegisterOnShutdown(f)
	}
	stopping, stop := context.WithCancel(ctx)
	defer stop()
	var once sync.Once
	failed := func() { once.Do(stop) }

	consumer := start(ctx, a.consumer, failed)
	producers := make([]*part, len(a.producers))
	for i, r := range a.producers {
		producers[i] = start(ctx, r, failed)
	}
	serveErr := make(chan error, 1)
	select {
	case <-a.consumer.Running():
		go func() { serveErr <- srv.Serve(ln) }()
		a.log.Info("nvent serving", slog.String("addr", ln.Addr().String()))
		if ready != nil {
			ready(ln.Addr())
		}
	case <-stopping.Done():
		_ = ln.Close()
		serveErr <- http.ErrServerClosed
	}
	select {
	case <-stopping.Done():
	case err := <-serveErr:
		if !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("HTTP server failed", slog.Any("error", err))
		}
		stop()
	}

	a.log.Info("shutting down", slog.Duration("timeout", a.shutdownTimeout))
	deadline, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.shutdownTimeout)
	defer cancel()
	var errs []error
	if err := srv.Shutdown(deadline); err != nil {
		errs = append(errs, fmt.Errorf("error shutting down HTTP server: %w", err))
	}
	// The producers get half the time to finish what they publish while the
	// router still consumes it; the router closes after them.
	half, cancelHalf := context.WithTimeout(deadline, a.shutdownTimeout/2)
	defer cancelHalf()
	for i, p := range producers {
		if err := p.stop(half); err != nil {
			a.log.Warn("a producer is still publishing; closing the router under it", slog.Int("producer", i), slog.Any("error", err))
		}
	}
	if err := consumer.stop(deadline); err != nil {
		errs = append(errs, fmt.Errorf("router: %w", err))
	}
	// A producer still publishing when the router closed returns now.
	for i, p := range producers {
		select {
		case <-p.done:
			if p.err != nil {
				errs = append(errs, fmt.Errorf("producer %d: %w", i, p.err))
			}
		case <-deadline.Done():
			errs = append(errs, fmt.Errorf("producer %d did not stop", i))
		}
	}
	return errors.Join(errs...)
}
