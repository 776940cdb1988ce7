// Package httpapi is nvent's HTTP edge: the JSON API over the store, health
// endpoints, and the mapping of domain errors to HTTP statuses.
package httpapi

import (
	"context"
	"crypto/subtle"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/nvent/nvent/internal/domain"
	"github.com/nvent/nvent/internal/storage"
)

// Check is one readiness probe (store reachable, stream reachable, …).
type Check struct {
	Name  string
	Check func(ctx context.Context) error
}

// Config holds what the API needs from the configuration.
type Config struct {
	// MaxBodyBytes caps a request body (413 beyond it).
	MaxBodyBytes int64
	// AuthToken, when set, is required as "Authorization: Bearer …" on /v1.
	AuthToken string
}

// API serves the HTTP endpoints. It is an http.Handler.
type API struct {
	store   storage.Store
	log     *slog.Logger
	maxBody int64
	token   string
	checks  []Check
	mux     *http.ServeMux
}

// New builds the API over store. checks are run by /readyz.
func New(cfg Config, store storage.Store, log *slog.Logger, checks []Check) *API {
	a := &API{store: store, log: log, maxBody: cfg.MaxBodyBytes, token: cfg.AuthToken, checks: checks, mux: http.NewServeMux()}
	if a.maxBody <= 0 {
		a.maxBody = 1 << 20
	}
	a.routes()
	return a
}

func (a *API) routes() {
	v1 := func(pattern string, h http.HandlerFunc) { a.mux.Handle(pattern, a.authorize(h)) }
	v1("POST /v1/streams/{subject}/events", a.appendEvents)
	v1("GET /v1/streams/{subject}/events", a.readEvents)
	v1("PUT /v1/docs/{collection}/{id}", a.saveDocument)
	v1("GET /v1/docs/{collection}/{id}", a.getDocument)
	v1("DELETE /v1/docs/{collection}/{id}", a.deleteDocument)
	v1("GET /v1/docs/{collection}", a.listDocuments)
	v1("PUT /v1/kv/{key}", a.setKey)
	v1("GET /v1/kv/{key}", a.getKey)
	v1("DELETE /v1/kv/{key}", a.deleteKey)
	v1("POST /v1/kv/{key}/incr", a.incrKey)
	a.mux.HandleFunc("GET /healthz", a.healthz)
	a.mux.HandleFunc("GET /readyz", a.readyz)
	a.mux.HandleFunc("/v1/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, errBody(domain.CodeNotFound, "no such endpoint: "+r.Method+" "+r.URL.Path))
	})
}

// Handle registers another handler on the API's mux (the dashboard, the
// subscription endpoints); it is wrapped in the same auth when under /v1.
func (a *API) Handle(pattern string, h http.Handler) {
	if strings.Contains(pattern, "/v1/") {
		h = a.authorize(h)
	}
	a.mux.Handle(pattern, h)
}

// ServeHTTP implements http.Handler, recovering from panics in handlers.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	defer func() {
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler {
				panic(p)
			}
			a.log.ErrorContext(r.Context(), "handler panicked", slog.String("path", r.URL.Path), slog.Any("panic", p))
			writeJSON(w, http.StatusInternalServerError, errBody(domain.CodeInternal, "internal error"))
		}
	}()
	a.mux.ServeHTTP(w, r)
}

func errBody(code domain.Code, message string) errorBody {
	var b errorBody
	b.Error.Code = code
	b.Error.Message = message
	return b
}

// authorize requires the bearer token when one is configured. The token is
// compared in constant time and never logged.
func (a *API) authorize(h http.Handler) http.Handler {
	if a.token == "" {
		return h
	}
	want := []byte(a.token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok {
			got = r.URL.Query().Get("access_token") // EventSource cannot set headers
		}
		if subtle.ConstantTimeCompare([]byte(got), want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="nvent"`)
			writeJSON(w, http.StatusUnauthorized, errBody(domain.CodeUnauthorized, "missing or wrong bearer token"))
			return
		}
		h.ServeHTTP(w, r)
	})
}

func (a *API) healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// readyz runs every check with a short deadline and answers 503 naming the
// failing ones.
func (a *API) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	checks := map[string]string{}
	status, code := "ready", http.StatusOK
	all := append([]Check{{Name: "store", Check: a.store.Ping}}, a.checks...)
	for _, c := range all {
		if err := c.Check(ctx); err != nil {
			checks[c.Name] = "failing: " + err.Error()
			status, code = "unready", http.StatusServiceUnavailable
			continue
		}
		checks[c.Name] = "ok"
	}
	writeJSON(w, code, map[string]any{"status": status, "checks": checks})
}
