package relay_test

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/nvent/nvent/internal/bus"
	"github.com/nvent/nvent/internal/domain"
	"github.com/nvent/nvent/internal/relay"
	"github.com/nvent/nvent/internal/storage/sqlite"
)

func openSQLite(t *testing.T, path string) *sqlite.Store {
	t.Helper()
	s, cleanup, err := sqlite.Provide(context.Background(), sqlite.Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cleanup)
	return s
}

func startLocal(t *testing.T, s *sqlite.Store, cfg relay.Config, hold chan struct{}) *instance {
	t.Helper()
	return startWith(t, func(b message.Publisher, m relay.Metrics, ready, busGone <-chan struct{}) runner {
		return relay.NewLocal(s, b, cfg, slog.New(slog.DiscardHandler), m, ready, busGone)
	}, hold)
}

func TestLocalRelayIsDurableToo(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nvent.db")
	s := openSQLite(t, path)
	ctx := context.Background()
	cfg := relay.Config{PollInterval: time.Minute} // woken by the store's commit signal
	hold := make(chan struct{})
	first := startLocal(t, s, cfg, hold) // never acknowledges
	res, err := s.Append(ctx, "orders:1", []domain.NewEvent{{Type: "a"}}, domain.AppendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	first.expectNothing(t, 300*time.Millisecond, "the handler holds the message")
	first.stop() // the process dies before the acknowledgement

	second := startLocal(t, openSQLite(t, path), cfg, nil) // a new process on the same file
	if got := second.expect(t, 1, 10*time.Second); got[0].ID != res.Events[0].ID {
		t.Fatalf("after a restart the relay published %s, want the unacknowledged %s", got[0].ID, res.Events[0].ID)
	}
	second.stop()

	third := startLocal(t, s, cfg, nil)
	if _, err := s.SaveDocument(ctx, "users", "u1", []byte(`{"a":1}`), domain.SaveOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(ctx, "orders:1", []domain.NewEvent{{Type: "b"}}, domain.AppendOptions{}); err != nil {
		t.Fatal(err)
	}
	got := third.expect(t, 2, 10*time.Second) // events and changes are separate tables: any order between them
	kinds := map[bus.Kind]bus.Change{}
	for _, c := range got {
		kinds[c.Kind] = c
	}
	if c := kinds[bus.KindAppend]; c.Event == nil || c.Event.Seq != 2 {
		t.Fatalf("the relay published %+v; want only the new seq 2 (seq 1 was acknowledged)", got)
	}
	if c := kinds[bus.KindSave]; c.Document == nil || c.Document.ID != "u1" || c.Document.Version != 1 {
		t.Fatalf("document change relayed as %+v", c)
	}
}
