package postgres_test

import (
	"sync"
	"testing"

	"github.com/nvent/nvent/internal/storage"
	"github.com/nvent/nvent/internal/storage/postgres"
	"github.com/nvent/nvent/internal/storage/storagetest"
)

func TestContract(t *testing.T) {
	var mu sync.Mutex
	configs := make(map[storage.Store]postgres.Config)
	storagetest.Run(t, storagetest.Harness{
		New: func(t *testing.T) storage.Store {
			cfg := testConfig(t)
			s := open(t, cfg)
			mu.Lock()
			defer mu.Unlock()
			configs[s] = cfg
			return s
		},
		// Reopen opens a second pool on the same schema, as a restarted
		// process would.
		Reopen: func(t *testing.T, s storage.Store) storage.Store {
			mu.Lock()
			cfg := configs[s]
			mu.Unlock()
			cfg.AutoMigrate = false
			return open(t, cfg)
		},
	})
}
