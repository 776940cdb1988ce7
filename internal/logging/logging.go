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
func Watermill(log *slog.Logger) watermill.LoggerAdapter {
	return quietCancel{watermill.NewSlogLoggerWithLevelMapping(log, map[slog.Level]slog.Level{slog.LevelInfo: slog.LevelDebug})}
}

type quietCancel struct{ watermill.LoggerAdapter }

func (q quietCancel) Error(msg string, err error, fields watermill.LogFields) {
	if errors.Is(err, context.Canceled) {
		q.LoggerAdapter.Debug(msg, fields.Add(watermill.LogFields{"error": err}))
		return
	}
	q.LoggerAdapter.Error(msg, err, fields)
}

func (q quietCancel) With(fields watermill.LogFields) watermill.LoggerAdapter {
	return quietCancel{q.LoggerAdapter.With(fields)}
}
