package live

import (
	"bytes"
	"context"
	"log/slog"
	"net/http/httptest"
	"slices"
	"testing"

	"github.com/nvent/nvent/internal/domain"
	"github.com/nvent/nvent/internal/storage/memory"
	"github.com/nvent/nvent/internal/stream"
)

// recordingSink records the history a session sends.
type recordingSink struct{ sent []domain.Event }

func (r *recordingSink) history(_ *subscription, events []domain.Event) error {
	r.sent = append(r.sent, events...)
	return nil
}

func (r *recordingSink) event(*subscription, stream.Message, int64) error { return nil }

// FuzzClientMessages plays arbitrary WebSocket messages (one per line of
// the input) through the protocol decoder and the command handler of one
// connection, with or without a run token's scope, under small limits.
// Every message gets exactly one answer of a documented type; errors carry
// a documented code; a connection never holds more subscriptions than its
// limit, nor (with a run token) any beyond its run; history only goes
// forward from afterSeq; and when the connection closes, the hub holds
// nothing of it.
func FuzzClientMessages(f *testing.F) {
	for _, s := range []string{
		`{"type":"ping"}`,
		`{"type":"subscribe","runId":"r1","afterSeq":1}`,
		`{"type":"subscribe","topic":"client:flow:r1"}` + "\n" + `{"type":"unsubscribe","topic":"client:flow:r1"}`,
		`{"type":"subscribe","topic":"store-sync:append:*"}`,
		`{"type":"subscribe","topic":"a*b*c*d"}`,
		`{"type":"subscribe","topic":"store-sync:append:nq:flow:r1","afterSeq":-5}`,
		`{"type":"subscribe","topic":"x","runId":"r1"}`,
		`{"type":"subscribe"}`,
		`{"type":"subscribe","runId":"a*"}`,
		"{\"type\":\"subscribe\",\"topic\":\"a\"}\n{\"type\":\"subscribe\",\"topic\":\"b\"}\n{\"type\":\"subscribe\",\"topic\":\"c\"}\n{\"type\":\"subscribe\",\"topic\":\"d\"}",
		`{"type":"nope"}`, `[]`, `null`, `{"type":"subscribe","afterSeq":1.5}`, "\xff",
	} {
		f.Add([]byte(s), false)
		f.Add([]byte(s), true)
	}
	cfg := Config{MaxSubscriptions: 3, MaxPatternBytes: 64, MaxPatternStars: 2}
	cfg.setDefaults()
	store := memory.New()
	f.Cleanup(func() { _ = store.Close() })
	if _, err := store.Append(context.Background(), "nq:flow:r1", []domain.NewEvent{{Type: "a"}, {Type: "b"}, {Type: "c"}}, domain.AppendOptions{}); err != nil {
		f.Fatal(err)
	}
	answers := []string{"pong", "subscribed", "unsubscribed", "error"}
	codes := []domain.Code{domain.CodeInvalidInput, domain.CodeTooLarge, domain.CodeForbidden}
	mine := []string{"client:flow:r1", "store-sync:append:nq:flow:r1"}

	f.Fuzz(func(t *testing.T, input []byte, scoped bool) {
		hub := NewHub(nil, slog.New(slog.DiscardHandler))
		scope := ScopeByRun(func(context.Context) (string, bool) { return "r1", scoped })
		e := NewEndpoints(hub, store, cfg, slog.New(slog.DiscardHandler), Counters{}, scope, 0)
		out := &recordingSink{}
		s := newSession(hub, store, e.cfg, out)
		r := httptest.NewRequest("GET", "/v1/ws", nil)
		frames := bytes.Split(input, []byte("\n"))
		if len(frames) > 16 {
			frames = frames[:16]
		}
		for _, frame := range frames {
			var got []map[string]any
			send := func(v any) error {
				got = append(got, v.(map[string]any))
				return nil
			}
			m := decodeClientMessage(frame)
			before, seen := len(s.subs), len(out.sent)
			if err := e.command(context.Background(), r, s, send, m); err != nil {
				t.Fatalf("command(%q) ended the connection: %v", frame, err)
			}
			if len(got) != 1 {
				t.Fatalf("message %q got %d answers: %v", frame, len(got), got)
			}
			typ, _ := got[0]["type"].(string)
			if !slices.Contains(answers, typ) {
				t.Fatalf("message %q answered with type %q", frame, typ)
			}
			if typ == "error" {
				code, _ := got[0]["code"].(domain.Code)
				if !slices.Contains(codes, code) {
					t.Fatalf("message %q answered with error code %q", frame, code)
				}
				if len(s.subs) != before || len(out.sent) != seen {
					t.Fatalf("refused message %q changed the subscriptions (%d → %d) or sent history", frame, before, len(s.subs))
				}
			}
			if typ == "subscribed" && len(s.subs) != before+1 {
				t.Fatalf("subscribed to %q but holds %d subscriptions, had %d", frame, len(s.subs), before)
			}
			if len(s.subs) > cfg.MaxSubscriptions {
				t.Fatalf("a connection holds %d subscriptions; the limit is %d", len(s.subs), cfg.MaxSubscriptions)
			}
			for _, sub := range s.subs {
				if scoped && !slices.Contains(mine, sub.pattern.String()) {
					t.Fatalf("a run token for r1 subscribed to %q", sub.pattern)
				}
				if len(sub.pattern.String()) > cfg.MaxPatternBytes || sub.pattern.Stars() > cfg.MaxPatternStars {
					t.Fatalf("subscribed to %q beyond the pattern limits", sub.pattern)
				}
			}
			if h := out.sent[seen:]; len(h) > 0 {
				if h[0].Seq <= m.AfterSeq || !slices.IsSortedFunc(h, func(a, b domain.Event) int { return int(a.Seq - b.Seq) }) {
					t.Fatalf("history after %d came as %v", m.AfterSeq, h)
				}
			}
		}
		s.close()
		hub.mu.RLock()
		defer hub.mu.RUnlock()
		if len(hub.exact) != 0 || len(hub.wild) != 0 {
			t.Fatalf("a closed connection left %d topics and %d patterns in the hub", len(hub.exact), len(hub.wild))
		}
	})
}
