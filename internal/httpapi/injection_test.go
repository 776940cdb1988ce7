package httpapi_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	_ "modernc.org/sqlite" // the "sqlite" driver, to look at the tables directly

	"github.com/nvent/nvent/internal/domain"
	"github.com/nvent/nvent/internal/flows"
	"github.com/nvent/nvent/internal/httpapi"
	"github.com/nvent/nvent/internal/storage"
	"github.com/nvent/nvent/internal/storage/postgres"
	"github.com/nvent/nvent/internal/storage/sqlite"
	"github.com/nvent/nvent/internal/testenv"
)

// hostile are the strings sent through every parameter: SQL injection,
// placeholders, comment and quote tricks, NUL bytes, LIKE wildcards and
// unicode (right-to-left override, emoji, combining marks).
var hostile = []string{
	`'; DROP TABLE events; --`,
	`" OR 1=1`,
	`' OR '1'='1`,
	`$1`,
	`$$; DROP TABLE kv; $$`,
	`1; DELETE FROM documents`,
	`?`,
	"a\x00b",
	"\x00",
	`%`,
	`\`,
	`*`,
	"日本語",
	"\u202egnp.exe",
	"😀",
	"e\u0301",
	strings.Repeat("'", 300),
}

// tables reports, for each table nvent owns, its row count (-1: missing).
type tables func(t *testing.T) map[string]int

// TestInjectionStringsThroughEveryParameter sends the hostile strings
// through every API parameter — path names, event fields and data, query
// parameters, headers, document and KV bodies, flow names and inputs —
// against the Postgres and SQLite stores. Each answer is a typed client
// error or a faithful round trip (never a 500), and afterwards every table
// is there, holding exactly what the accepted requests wrote.
func TestInjectionStringsThroughEveryParameter(t *testing.T) {
	t.Run("postgres", func(t *testing.T) {
		url, schema := testenv.PostgresSchema(t)
		s, cleanup, err := postgres.Open(context.Background(), postgres.Config{URL: url, Schema: schema, MaxConns: 4, AutoMigrate: true}, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(cleanup)
		runInjection(t, s, func(t *testing.T) map[string]int {
			conn, err := pgx.Connect(context.Background(), url)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(context.Background())
			return countRows(t, func(table string) (int, error) {
				var n int
				err := conn.QueryRow(context.Background(), "SELECT count(*) FROM "+pgx.Identifier{schema, table}.Sanitize()).Scan(&n)
				return n, err
			})
		})
	})
	t.Run("sqlite", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "nvent.db")
		s, err := sqlite.Open(context.Background(), sqlite.Config{Path: path})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		runInjection(t, s, func(t *testing.T) map[string]int {
			db, err := sql.Open("sqlite", path)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			return countRows(t, func(table string) (int, error) {
				var n int
				err := db.QueryRow(`SELECT count(*) FROM "` + table + `"`).Scan(&n)
				return n, err
			})
		})
	})
}

func countRows(t *testing.T, count func(table string) (int, error)) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, table := range []string{"events", "documents", "kv"} {
		n, err := count(table)
		if err != nil {
			t.Errorf("table %s: %v", table, err)
			n = -1
		}
		out[table] = n
	}
	return out
}

type injector struct {
	t   *testing.T
	url string
	// What the accepted requests wrote.
	events int
	docs   map[string]bool
	keys   map[string]bool
}

// send makes one request and checks that it is answered with a 2xx or a
// documented 4xx error — never a 500 — and returns the status and body.
func (in *injector) send(method, path, body string, header ...string) (int, []byte) {
	in.t.Helper()
	req, err := http.NewRequest(method, in.url+path, strings.NewReader(body))
	if err != nil {
		in.t.Fatalf("%s %q: %v", method, path, err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header[header[i]] = []string{header[i+1]}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		// Go's client refuses to send some header values (a NUL, a
		// newline): nothing reached the server.
		if strings.Contains(err.Error(), "invalid header") {
			return 0, nil
		}
		in.t.Fatalf("%s %q: %v", method, path, err)
	}
	defer resp.Body.Close()
	var b json.RawMessage
	_ = json.NewDecoder(resp.Body).Decode(&b)
	if resp.StatusCode >= 500 {
		in.t.Errorf("%s %q %q: %d %s", method, path, body, resp.StatusCode, b)
	}
	if resp.StatusCode >= 400 {
		var e struct {
			Error struct{ Code, Message string }
		}
		if json.Unmarshal(b, &e) != nil || e.Error.Code == "" || httpapi.StatusOf(domain.Code(e.Error.Code)) != resp.StatusCode {
			in.t.Errorf("%s %q: %d %s is not a typed error", method, path, resp.StatusCode, b)
		}
	}
	return resp.StatusCode, b
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func runInjection(t *testing.T, store storage.Store, count tables) {
	api := httpapi.New(httpapi.Config{}, store, slog.New(slog.DiscardHandler), nil)
	flows.New(flows.Config{}, store, slog.New(slog.DiscardHandler)).Register(api)
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	in := &injector{t: t, url: srv.URL, docs: map[string]bool{}, keys: map[string]bool{}}

	// LIKE wildcards in valid names match only themselves.
	for _, name := range []string{"a_c", "abc", "a.c"} {
		in.send("POST", "/v1/streams/"+name+"/events", `{"type":"t"}`)
		in.send("PUT", "/v1/docs/"+name+"/"+name, `{}`)
		in.send("PUT", "/v1/kv/"+name, `{"value":1}`)
		in.events++
		in.docs[name+"/"+name], in.keys[name] = true, true
	}
	for _, name := range []string{"a_c", "abc", "a.c"} {
		_, b := in.send("GET", "/v1/streams/"+name+"/events", "")
		var evs struct{ Events []domain.Event }
		_ = json.Unmarshal(b, &evs)
		_, b = in.send("GET", "/v1/docs/"+name, "")
		var page domain.DocumentPage
		_ = json.Unmarshal(b, &page)
		if len(evs.Events) != 1 || evs.Events[0].Subject != name || len(page.Items) != 1 || page.Items[0].Collection != name {
			t.Errorf("name %q reads %d events and %d documents, want its own one of each", name, len(evs.Events), len(page.Items))
		}
	}

	for i, h := range hostile {
		p := url.PathEscape(h)
		q := url.QueryEscape(h)
		// As names (in paths and queries): refused as invalid input.
		for _, req := range [][3]string{
			{"POST", "/v1/streams/" + p + "/events", `{"type":"t"}`},
			{"GET", "/v1/streams/" + p + "/events", ""},
			{"GET", "/v1/streams/s/events?types=" + q, ""},
			{"GET", "/v1/streams/s/events?after=" + q, ""},
			{"GET", "/v1/streams/s/events?before=" + q, ""},
			{"GET", "/v1/streams/s/events?limit=" + q, ""},
			{"GET", "/v1/streams/s/events?order=" + q, ""},
			{"PUT", "/v1/docs/" + p + "/d", `{}`},
			{"PUT", "/v1/docs/c/" + p, `{}`},
			{"GET", "/v1/docs/c/" + p, ""},
			{"DELETE", "/v1/docs/" + p + "/d", ""},
			{"GET", "/v1/docs/" + p, ""},
			{"GET", "/v1/docs/c?after=" + q, ""},
			{"GET", "/v1/docs/c?limit=" + q, ""},
			{"PUT", "/v1/kv/" + p, `{"value":1}`},
			{"GET", "/v1/kv/" + p, ""},
			{"DELETE", "/v1/kv/" + p, ""},
			{"POST", "/v1/kv/" + p + "/incr", ""},
			{"POST", "/v1/flows/" + p + "/runs", ""},
			{"GET", "/v1/runs/" + p, ""},
			{"GET", "/v1/flows/" + p + "/runs", ""},
			{"GET", "/v1/runs?after=" + q, ""},
			{"POST", "/v1/runs/" + p + "/token", ""},
		} {
			status, b := in.send(req[0], req[1], req[2])
			if status != 400 && status != 404 && status != 0 {
				t.Errorf("%s %s with %q: %d %s, want it refused", req[0], req[1], h, status, b)
			}
		}
		// As event fields: names are refused, data round-trips.
		for _, field := range []string{"id", "type", "runId", "flowName", "stepName", "stepId"} {
			status, _ := in.send("POST", "/v1/streams/s/events", fmt.Sprintf(`{"type":"t",%q:%s}`, field, jsonString(h)))
			if field == "type" {
				status, _ = in.send("POST", "/v1/streams/s/events", `{"type":`+jsonString(h)+`}`)
			}
			if status != 400 {
				t.Errorf("event %s %q: %d, want 400", field, h, status)
			}
		}
		subject := fmt.Sprintf("inj:%d", i)
		data := `{"v":` + jsonString(h) + `,` + jsonString(h) + `:[` + jsonString(h) + `]}`
		status, b := in.send("POST", "/v1/streams/"+subject+"/events", `{"type":"t","data":`+data+`}`, "X-Correlation-ID", h)
		if status == 0 { // a header value Go's client will not send
			status, b = in.send("POST", "/v1/streams/"+subject+"/events", `{"type":"t","data":`+data+`}`)
		}
		if status != 201 {
			t.Fatalf("event data %q: %d %s", h, status, b)
		}
		in.events++
		_, b = in.send("GET", "/v1/streams/"+subject+"/events?types=t&order=desc", "")
		var evs struct{ Events []domain.Event }
		if json.Unmarshal(b, &evs) != nil || len(evs.Events) != 1 || !jsonEqual(evs.Events[0].Data, data) {
			t.Errorf("event data %q read back as %s", h, b)
		}
		// Documents, keys and flow inputs: bodies round-trip.
		doc := fmt.Sprintf("d%d", i)
		if status, b := in.send("PUT", "/v1/docs/inj/"+doc, data, "If-Match", h); h != "*" && status != 400 && status != 0 { // If-Match: * is any version
			t.Errorf("If-Match %q: %d %s", h, status, b)
		}
		if status, b := in.send("PUT", "/v1/docs/inj/"+doc, data); status != 201 && (h != "*" || status != 200) {
			t.Fatalf("document %q: %d %s", h, status, b)
		}
		in.docs["inj/"+doc] = true
		if _, b := in.send("GET", "/v1/docs/inj/"+doc, ""); !strings.Contains(string(b), `"data":`+compact(data)) {
			t.Errorf("document %q read back as %s", h, b)
		}
		key := fmt.Sprintf("k%d", i)
		if status, b := in.send("PUT", "/v1/kv/"+key, `{"value":`+data+`}`); status != 200 {
			t.Fatalf("key value %q: %d %s", h, status, b)
		}
		in.keys[key] = true
		if _, b := in.send("GET", "/v1/kv/"+key, ""); !strings.Contains(string(b), `"value":`+compact(data)) {
			t.Errorf("key value %q read back as %s", h, b)
		}
		if status, _ := in.send("POST", "/v1/kv/"+key+"/incr", ""); status != 409 {
			t.Errorf("incrementing a key that holds %q: %d, want 409", h, status)
		}
		for _, body := range []string{`{"value":1,"ttlSeconds":` + jsonString(h) + `}`, `{"by":` + jsonString(h) + `}`} {
			if status, _ := in.send("PUT", "/v1/kv/x"+key, body); status != 400 {
				t.Errorf("key body %s: %d, want 400", body, status)
			}
		}
		status, b = in.send("POST", "/v1/flows/inj/runs", data)
		var run struct{ RunID string }
		if status != 201 || json.Unmarshal(b, &run) != nil {
			t.Fatalf("flow input %q: %d %s", h, status, b)
		}
		in.events++
		if _, b := in.send("GET", "/v1/streams/nq:flow:"+run.RunID+"/events", ""); !strings.Contains(string(b), `"data":`+compact(data)) {
			t.Errorf("flow input %q read back as %s", h, b)
		}
	}

	// Every table is there and holds exactly what was accepted.
	got := count(t)
	want := map[string]int{"events": in.events, "documents": len(in.docs), "kv": len(in.keys)}
	for table, n := range want {
		if got[table] != n {
			t.Errorf("table %s holds %d rows, want %d", table, got[table], n)
		}
	}
}

func compact(s string) string {
	c, err := domain.CompactJSON(json.RawMessage(s))
	if err != nil {
		panic(err)
	}
	b, _ := json.Marshal(json.RawMessage(c)) // as the API writes it: HTML escaped
	return string(b)
}

func jsonEqual(a json.RawMessage, b string) bool {
	var x, y any
	return json.Unmarshal(a, &x) == nil && json.Unmarshal([]byte(b), &y) == nil && fmt.Sprint(x) == fmt.Sprint(y)
}
