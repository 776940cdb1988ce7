// Package logging builds the process's slog logger from the configuration.
package logging

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"

	"github.com/ThreeDotsLabs/watermill"

	"github.com/nvent/nvent/internal/config"
)

// New returns a logger writing to w in cfg.LogFormat (text or json) at
// cfg.LogLevel, every line carrying the instance id.
func New(cfg config.Config, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(strings.ToUpper(cfg.LogLevel))) // validated by config
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler
	if cfg.LogFormat == "json" {
		h = slog.NewJSONHandler(w, opts)
	} else {
		h = slog.NewTextHandler(w, opts)
	}
	return slog.New(h).With(slog.String("instance", cfg.InstanceID))
}

// Watermill adapts log for Watermill. Watermill's Info lines (a subscription
// started, a router closed) become Debug, and its errors that are only a
// canceled context (a subscription ended by shutdown) become Debug too, so
// that a normal start and stop logs nothing alarming.
//
// Trace, Debug and Info lines return before building anything when log does
// not log at Debug: Watermill logs a Trace line per message handled, and its
// slog adapter turns the fields into attributes before slog checks the level.
func Watermill(log *slog.Logger) watermill.LoggerAdapter {
	return quietCancel{
		LoggerAdapter: watermill.NewSlogLoggerWithLevelMapping(log, map[slog.Level]slog.Level{slog.LevelInfo: slog.LevelDebug}),
		log:           log,
	}
}

type quietCancel struct {
	watermill.LoggerAdapter
	log *slog.Logger
}

// verbose reports whether lines below Info (Watermill's Trace is Debug-4)
// at level l are logged at all.
func (q quietCancel) verbose(l slog.Level) bool {
	return q.log.Enabled(context.Background(), l)
}

func (q quietCancel) Trace(msg string, fields watermill.LogFields) {
	if q.verbose(watermill.LevelTrace) {
		q.LoggerAdapter.Trace(msg, fields)
	}
}

func (q quietCancel) Debug(msg string, fields watermill.LogFields) {
	if q.verbose(slog.LevelDebug) {
		q.LoggerAdapter.Debug(msg, fields)
	}
}

func (q quietCancel) Info(msg string, fields watermill.LogFields) {
	if q.verbose(slog.LevelDebug) { // Info is mapped to Debug
		q.LoggerAdapter.Info(msg, fields)
	}
}

func (q quietCancel) Error(msg string, err error, fields watermill.LogFields) {
	if errors.Is(err, context.Canceled) {
		q.LoggerAdapter.Debug(msg, fields.Add(watermill.LogFields{"error": err}))
		return
	}
	q.LoggerAdapter.Error(msg, err, fields)
}

func (q quietCancel) With(fields watermill.LogFields) watermill.LoggerAdapter {
	return quietCancel{LoggerAdapter: q.LoggerAdapter.With(fields), log: q.log}
}
