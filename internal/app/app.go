// Package app runs nvent's serve command: the HTTP server and, beside it,
// every background part (router, relay) until the context ends, then stops
// them in order within the shutdown timeout.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"golang.org/x/sync/errgroup"
)

// Runner is a background part of the service. Run blocks until ctx ends or
// the part fails. A Runner that also has `Running() chan struct{}` is
// waited for before the HTTP server accepts requests.
type Runner interface {
	Run(ctx context.Context) error
}

// App is a configured nvent server, ready to Run.
type App struct {
	addr            string
	handler         http.Handler
	log             *slog.Logger
	shutdownTimeout time.Duration
	runners         []Runner
}

// New returns an App serving handler on addr.
func New(addr string, handler http.Handler, log *slog.Logger, shutdownTimeout time.Duration, runners ...Runner) *App {
	return &App{addr: addr, handler: handler, log: log, shutdownTimeout: shutdownTimeout, runners: runners}
}

// Run listens and serves until ctx ends or a part fails, then shuts the HTTP
// server down gracefully (in-flight requests finish within the shutdown
// timeout) and waits for every runner to return. ready, when not nil, is
// called with the bound address once the listener is open.
func (a *App) Run(ctx context.Context, ready func(addr net.Addr)) error {
	ln, err := net.Listen("tcp", a.addr)
	if err != nil {
		return fmt.Errorf("error listening on %s: %w", a.addr, err)
	}
	srv := &http.Server{
		Handler:           a.handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	g, gctx := errgroup.WithContext(ctx)
	for _, r := range a.runners {
		g.Go(func() error { return r.Run(gctx) })
	}
	// Writes must not be accepted before the handlers that route them are
	// subscribed: a runner that says when it is running is waited for.
	for _, r := range a.runners {
		if rr, ok := r.(interface{ Running() chan struct{} }); ok {
			select {
			case <-rr.Running():
			case <-gctx.Done():
				_ = ln.Close()
				return g.Wait()
			}
		}
	}
	g.Go(func() error {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("error serving HTTP: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		a.log.Info("shutting down", slog.Duration("timeout", a.shutdownTimeout))
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.shutdownTimeout)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			return fmt.Errorf("error shutting down HTTP server: %w", err)
		}
		return nil
	})
	a.log.Info("nvent serving", slog.String("addr", ln.Addr().String()))
	if ready != nil {
		ready(ln.Addr())
	}
	return g.Wait()
}
