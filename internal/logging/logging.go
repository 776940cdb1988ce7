// Package logging builds the process's slog logger from the configuration.
package logging

import (
	"io"
	"log/slog"
	"strings"

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
