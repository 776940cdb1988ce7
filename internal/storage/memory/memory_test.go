package memory_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/nvent/nvent/internal/storage"
	"github.com/nvent/nvent/internal/storage/memory"
	"github.com/nvent/nvent/internal/storage/storagetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestContract(t *testing.T) {
	storagetest.Run(t, storagetest.Harness{
		New: func(t *testing.T) storage.Store {
			s := memory.New()
			t.Cleanup(func() { _ = s.Close() })
			return s
		},
	})
}
