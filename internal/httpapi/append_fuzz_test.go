package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	"github.com/nvent/nvent/internal/domain"
	"github.com/nvent/nvent/internal/storage/memory"
)

// FuzzAppendBody sends arbitrary bodies (and subjects) to
// POST /v1/streams/{subject}/events, small limits included, and holds the
// answer to the API's promises: never a 500; an error is the documented
// {"error":{"code","message"}} with the status of its code and writes
// nothing; a success returns events that the store holds, in seq order.
func FuzzAppendBody(f *testing.F) {
	for _, s := range [][2]string{
		{"orders:1", `{"type":"order.placed","data":{"total":10}}`},
		{"orders:1", `{"events":[{"type":"a"},{"type":"b","id":"fixed"}],"expectedSeq":0}`},
		{"orders:1", `{"events":[{"type":"a","id":"x"},{"type":"b","id":"x"}]}`},
		{"orders:1", `{"events":[],"expectedSeq":-1}`},
		{"orders:1", `{"events":null}`},
		{"orders:1", `{"type":"a","data":"` + string(bytes.Repeat([]byte("d"), 80)) + `"}`},
		{"orders:1", `{"events":[{"type":"a"},{"type":"a"},{"type":"a"},{"type":"a"},{"type":"a"}]}`},
		{"nq:flow:r1", `{"type":"flow.start","flowName":"billing","attempt":-1}`},
		{"s", `{"type":"x","sequence":3}`},
		{"s", `{"type":"x"}{"type":"y"}`},
		{"s", `null`}, {"s", `[1,2]`}, {"s", `"x"`}, {"s", ``}, {"s", "{\"type\":\"x\",\"data\":\"\x00\"}"},
		{"a*b", `{"type":"x"}`}, {"'; DROP TABLE events; --", `{"type":"x"}`},
		{"s", `{"type":"x","data":1e999}`}, {"s", `{"type":"x","attempt":1e3}`},
	} {
		f.Add(s[0], []byte(s[1]))
	}
	f.Fuzz(func(t *testing.T, subject string, body []byte) {
		store := memory.New()
		defer store.Close()
		api := New(Config{MaxBodyBytes: 512, Limits: domain.Limits{MaxBatchEvents: 4, MaxEventDataBytes: 64, MaxSubjectBytes: 32}},
			store, slog.New(slog.DiscardHandler), nil)
		if subject == "" || len(subject) > 300 {
			return
		}
		req := httptest.NewRequest("POST", "/v1/streams/"+url.PathEscape(subject)+"/events", bytes.NewReader(body))
		rec := httptest.NewRecorder()
		api.ServeHTTP(rec, req)
		status := rec.Code
		if status == http.StatusNotFound || status == http.StatusMovedPermanently || status == http.StatusTemporaryRedirect {
			return // the subject made another path (a "/" in it, "..")
		}
		var out struct {
			Events []domain.Event
			Error  *struct{ Code, Message string }
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
			t.Fatalf("answer %d %q is not JSON: %v", status, rec.Body, err)
		}
		stored, err := store.Read(context.Background(), subject, domain.ReadOptions{})
		if status >= 400 {
			if out.Error == nil || out.Error.Code == "" || out.Error.Message == "" {
				t.Fatalf("error %d without code and message: %s", status, rec.Body)
			}
			if StatusOf(domain.Code(out.Error.Code)) != status || status >= 500 {
				t.Fatalf("%s %q answered %d %s", subject, body, status, rec.Body)
			}
			if err == nil && len(stored) != 0 {
				t.Fatalf("a refused append (%d %s) wrote %d events", status, rec.Body, len(stored))
			}
			return
		}
		if status != http.StatusCreated || err != nil || len(out.Events) == 0 || len(stored) != len(out.Events) {
			t.Fatalf("append answered %d %s; the store holds %d events (%v)", status, rec.Body, len(stored), err)
		}
		for i, e := range stored {
			if e.Seq != int64(i+1) || e.ID != out.Events[i].ID || len(e.Data) > 64 {
				t.Fatalf("stored %+v, answered %+v", e, out.Events[i])
			}
		}
	})
}
