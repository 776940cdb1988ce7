package relay_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"testing"
	"time"

	"github.com/nvent/nvent/internal/bus"
	"github.com/nvent/nvent/internal/domain"
	"github.com/nvent/nvent/internal/relay"
)

// correlationWriter is what both stores offer for these tests.
type correlationWriter interface {
	Append(ctx context.Context, subject string, in []domain.NewEvent, opts domain.AppendOptions) (domain.AppendResult, error)
	SaveDocument(ctx context.Context, collection, id string, data json.RawMessage, opts domain.SaveOptions) (domain.Document, error)
}

// writeCorrelated appends an event and saves a document, each with a
// context carrying its own correlation id, and appends one more event with
// a context carrying none. It returns the correlation id each change's id
// should be relayed with.
func writeCorrelated(t *testing.T, s correlationWriter) map[string]string {
	t.Helper()
	ctx := context.Background()
	want := map[string]string{}
	res, err := s.Append(domain.WithCorrelationID(ctx, "req-append"), "orders:1", []domain.NewEvent{{Type: "a"}}, domain.AppendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want[res.Events[0].ID] = "req-append"
	res, err = s.Append(ctx, "orders:1", []domain.NewEvent{{Type: "b"}}, domain.AppendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want[res.Events[0].ID] = ""
	if _, err := s.SaveDocument(domain.WithCorrelationID(ctx, "req-save"), "users", "u1", []byte(`{"a":1}`), domain.SaveOptions{}); err != nil {
		t.Fatal(err)
	}
	want["save users/u1"] = "req-save"
	return want
}

// checkCorrelated checks that the relayed changes are those of want, each
// carrying the correlation id it was written with.
func checkCorrelated(t *testing.T, got []bus.Change, want map[string]string) {
	t.Helper()
	for _, c := range got {
		key := c.ID
		if c.Kind == bus.KindSave {
			key = "save " + c.Collection + "/" + c.DocumentID
		}
		corr, ok := want[key]
		if !ok {
			t.Fatalf("relayed an unexpected change %+v", c)
		}
		if c.CorrelationID != corr {
			t.Errorf("%s %s relayed with correlation id %q, want %q", c.Kind, key, c.CorrelationID, corr)
		}
		delete(want, key)
	}
	if len(want) != 0 {
		t.Fatalf("not relayed: %v", want)
	}
}

func TestRelayedChangesCarryTheirCorrelationID(t *testing.T) {
	e := newEnv(t)
	in := startRelay(t, e, fast(), nil)
	want := writeCorrelated(t, e.store)
	checkCorrelated(t, in.expect(t, len(want), 10*time.Second), want)
	in.expectNothing(t, 300*time.Millisecond, "every change was relayed once")
}

func TestLocallyRelayedChangesCarryTheirCorrelationID(t *testing.T) {
	s := openSQLite(t, filepath.Join(t.TempDir(), "nvent.db"))
	in := startLocal(t, s, relay.Config{PollInterval: 50 * time.Millisecond}, nil)
	want := writeCorrelated(t, s)
	checkCorrelated(t, in.expect(t, len(want), 10*time.Second), want)
	in.expectNothing(t, 300*time.Millisecond, "every change was relayed once")
}
