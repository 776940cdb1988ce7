package httpapi_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nvent/nvent/internal/domain"
	"github.com/nvent/nvent/internal/httpapi"
)

// padTo returns a JSON object of exactly n bytes.
func padTo(t *testing.T, n int) string {
	t.Helper()
	b := `{"type":"x","data":"` + strings.Repeat("p", max(n-len(`{"type":"x","data":""}`), 0)) + `"}`
	if len(b) != n {
		t.Fatalf("cannot make a body of %d bytes", n)
	}
	return b
}

// batch returns {"events":[…]} of n events.
func batchOf(n int) string {
	evs := make([]string, n)
	for i := range evs {
		evs[i] = `{"type":"x"}`
	}
	return `{"events":[` + strings.Join(evs, ",") + `]}`
}

// dataOf returns one event whose data, compacted, is a JSON string of n
// bytes (quotes included), padded with white space that compacting drops.
func dataOf(n int) string {
	return `{"type":"x","data":  "` + strings.Repeat("d", n-2) + `"  }`
}

// TestEveryLimitJustUnderAndJustOver: for each configurable limit, a
// request just under it succeeds and one just over it fails with the
// documented status and code — and writes nothing.
func TestEveryLimitJustUnderAndJustOver(t *testing.T) {
	cfg := httpapi.Config{
		MaxBodyBytes: 4096,
		Limits:       domain.Limits{MaxBatchEvents: 5, MaxEventDataBytes: 100, MaxSubjectBytes: 20, MaxKeyBytes: 12, MaxPageSize: 10},
	}
	subj20 := "s:" + strings.Repeat("x", 18)
	key12 := "k:" + strings.Repeat("x", 10)
	cases := []struct {
		limit                    string
		method, path, underBody  string
		overPath, overBody       string
		underStatus, overStatus  int
		overCode, writtenSubject string
	}{
		{"max_body_bytes", "PUT", "/v1/docs/c/big", padTo(t, 4096), "", padTo(t, 4097), 201, 413, "too_large", ""},
		{"max_batch_events", "POST", "/v1/streams/batch/events", batchOf(5), "", batchOf(6), 201, 413, "too_large", "batch"},
		{"max_event_data_bytes", "POST", "/v1/streams/data/events", dataOf(100), "", dataOf(101), 201, 413, "too_large", "data"},
		{"max_event_data_bytes (in a batch)", "POST", "/v1/streams/data2/events", `{"events":[{"type":"x"},` + dataOf(100) + `]}`, "", `{"events":[{"type":"x"},` + dataOf(101) + `]}`, 201, 413, "too_large", "data2"},
		{"max_subject_bytes", "POST", "/v1/streams/" + subj20 + "/events", `{"type":"x"}`, "/v1/streams/" + subj20 + "y/events", `{"type":"x"}`, 201, 400, "invalid_input", subj20 + "y"},
		{"max_subject_bytes (read)", "GET", "/v1/streams/" + subj20 + "/events", "", "/v1/streams/" + subj20 + "y/events", "", 200, 400, "invalid_input", ""},
		{"max_key_bytes (kv)", "PUT", "/v1/kv/" + key12, `{"value":1}`, "/v1/kv/" + key12 + "y", `{"value":1}`, 200, 400, "invalid_input", ""},
		{"max_key_bytes (kv incr)", "POST", "/v1/kv/" + key12 + "/incr", ``, "/v1/kv/" + key12 + "z/incr", ``, 200, 400, "invalid_input", ""},
		{"max_key_bytes (document id)", "PUT", "/v1/docs/c/" + key12, `{}`, "/v1/docs/c/" + key12 + "y", `{}`, 201, 400, "invalid_input", ""},
		{"max_key_bytes (collection)", "PUT", "/v1/docs/" + key12 + "/d", `{}`, "/v1/docs/" + key12 + "y/d", `{}`, 201, 400, "invalid_input", ""},
		{"max_key_bytes (cursor)", "GET", "/v1/docs/c?after=" + key12, ``, "/v1/docs/c?after=" + key12 + "y", ``, 200, 400, "invalid_input", ""},
		{"max_page_size", "GET", "/v1/docs/c?limit=10", "", "/v1/docs/c?limit=11", "", 200, 400, "invalid_input", ""},
	}
	for _, tc := range cases {
		t.Run(tc.limit, func(t *testing.T) {
			c := newClient(t, cfg)
			over := tc.overPath
			if over == "" {
				over = tc.path
			}
			r := c.json(tc.method, over, tc.overBody)
			if r.status != tc.overStatus || r.errorCode(t) != tc.overCode {
				t.Fatalf("just over: %d %s, want %d %s", r.status, r.body, tc.overStatus, tc.overCode)
			}
			// Nothing was written: no events, no documents, no keys.
			ctx := context.Background()
			if tc.writtenSubject != "" {
				if evs, _ := c.store.Read(ctx, tc.writtenSubject, domain.ReadOptions{}); len(evs) != 0 {
					t.Fatalf("a refused append wrote %d events", len(evs))
				}
			}
			for _, coll := range []string{"c", key12 + "y"} {
				if page, _ := c.store.ListDocuments(ctx, coll, domain.ListOptions{}); len(page.Items) != 0 {
					t.Fatalf("a refused request wrote documents in %s: %+v", coll, page.Items)
				}
			}
			for _, k := range []string{key12 + "y", key12 + "z"} {
				if _, err := c.store.GetKey(ctx, k); domain.ErrorCode(err) != domain.CodeNotFound {
					t.Fatalf("a refused request wrote key %s: %v", k, err)
				}
			}
			r = c.json(tc.method, tc.path, tc.underBody)
			if r.status != tc.underStatus {
				t.Fatalf("just under: %d %s, want %d", r.status, r.body, tc.underStatus)
			}
		})
	}
}

// TestLimitErrorsAreClear: each refusal names the limit it hit.
func TestLimitErrorsAreClear(t *testing.T) {
	c := newClient(t, httpapi.Config{Limits: domain.Limits{MaxBatchEvents: 2, MaxEventDataBytes: 10, MaxSubjectBytes: 5, MaxPageSize: 3}})
	for _, tc := range []struct{ method, path, body, want string }{
		{"POST", "/v1/streams/s/events", batchOf(3), "3 events in one append; the limit is 2"},
		{"POST", "/v1/streams/s/events", dataOf(11), "event data is 11 bytes long; the limit is 10"},
		{"POST", "/v1/streams/subject/events", `{"type":"x"}`, "subject is 7 bytes long; the limit is 5"},
		{"GET", "/v1/docs/c?limit=4", ``, "limit 4 is above the largest page, 3"},
	} {
		r := c.json(tc.method, tc.path, tc.body)
		if !strings.Contains(string(r.body), tc.want) {
			t.Errorf("%s %s: %s, want a message with %q", tc.method, tc.path, r.body, tc.want)
		}
	}
}

// TestATrickledBodyIsCutOff: a client that sends its headers and then
// its body too slowly (or not at all) gets 400 after the body timeout, and
// nothing is written.
func TestATrickledBodyIsCutOff(t *testing.T) {
	c := newClient(t, httpapi.Config{BodyTimeout: 300 * time.Millisecond})
	addr := strings.TrimPrefix(c.srv.URL, "http://")
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	body := `{"type":"x"}`
	fmt.Fprintf(conn, "POST /v1/streams/slow/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body[:4])
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer to a stalled body within 10s: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 400 || !strings.Contains(string(b), "did not arrive within") {
		t.Fatalf("a stalled body: %d %s", resp.StatusCode, b)
	}
	if evs := c.events("slow"); len(evs) != 0 {
		t.Fatalf("a stalled body wrote %d events", len(evs))
	}
	// A body that arrives in time on the same server is taken.
	if r := c.json("POST", "/v1/streams/slow/events", body); r.status != 201 {
		t.Fatalf("a prompt body: %d %s", r.status, r.body)
	}
}
