//go:build wireinject

package di

import (
	"context"
	"log/slog"

	"github.com/google/wire"

	"github.com/nvent/nvent/internal/app"
	"github.com/nvent/nvent/internal/config"
	"github.com/nvent/nvent/internal/storage/postgres"
	"github.com/nvent/nvent/internal/stream"
)

// InitializeApp builds the whole serve process from cfg.
func InitializeApp(ctx context.Context, cfg config.Config, log *slog.Logger) (*app.App, func(), error) {
	panic(wire.Build(StoreSet, StreamSet, WiringSet, ServerSet))
}

// InitializeStore opens the configured storage adapter alone (for `nvent
// append`): no bus, no stream. A change it makes reaches the stream only
// through a running server's relay.
func InitializeStore(ctx context.Context, cfg config.Config, log *slog.Logger) (Adapter, func(), error) {
	panic(wire.Build(StoreSet))
}

// InitializeStream builds the configured stream alone (for `nvent tail`).
func InitializeStream(ctx context.Context, cfg config.Config, log *slog.Logger) (*stream.Stream, func(), error) {
	panic(wire.Build(StreamSet))
}

// InitializeMigrator builds the Postgres migrator (for `nvent migrate`).
func InitializeMigrator(ctx context.Context, cfg config.Config, log *slog.Logger) (*postgres.Migrator, func(), error) {
	panic(wire.Build(providePostgresConfig, provideMigrator))
}
