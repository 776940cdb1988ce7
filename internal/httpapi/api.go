// Package httpapi is nvent's HTTP edge: the JSON API over the store, health
// endpoints, and the mapping of domain errors to HTTP statuses.
package httpapi

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/nvent/nvent/internal/auth"
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
	// MaxBodyBytes caps a request body (413 beyond it). Default 1 MiB.
	MaxBodyBytes int64
	// BodyTimeout bounds how long reading one request body may take, so
	// that a client trickling a body cannot hold a request open. Default 30s.
	BodyTimeout time.Duration
	// AuthToken, when set, is required as "Authorization: Bearer …" on /v1.
	AuthToken string
	// Limits bound batches, event data, names and pages (zero fields: the
	// defaults of domain.DefaultLimits).
	Limits domain.Limits
}

// DefaultBodyTimeout is Config.BodyTimeout when unset.
const DefaultBodyTimeout = 30 * time.Second

// API serves the HTTP endpoints. It is an http.Handler.
type API struct {
	store       storage.Store
	log         *slog.Logger
	maxBody     int64
	bodyTimeout time.Duration
	limits      domain.Limits
	token       string
	runTokens   *auth.RunTokens
	checks      []Check
	mux         *http.ServeMux
	patterns    []string
}

// New builds the API over store. checks are run by /readyz.
func New(cfg Config, store storage.Store, log *slog.Logger, checks []Check) *API {
	a := &API{store: store, log: log, maxBody: cfg.MaxBodyBytes, bodyTimeout: cfg.BodyTimeout, limits: cfg.Limits.Normalize(),
		token: cfg.AuthToken, checks: checks, mux: http.NewServeMux()}
	if a.token != "" {
		a.runTokens = auth.NewRunTokens(a.token)
	}
	if a.maxBody <= 0 {
		a.maxBody = 1 << 20
	}
	if a.bodyTimeout <= 0 {
		a.bodyTimeout = DefaultBodyTimeout
	}
	a.routes()
	return a
}

// Routes lists the pattern of every route registered on the API, in the
// order they were registered (for tests that must cover every endpoint).
func (a *API) Routes() []string { return slices.Clone(a.patterns) }

func (a *API) handle(pattern string, h http.Handler) {
	a.patterns = append(a.patterns, pattern)
	a.mux.Handle(pattern, h)
}

func (a *API) routes() {
	v1 := func(pattern string, h http.HandlerFunc) { a.handle(pattern, a.authorize(a.checkNames(h))) }
	v1("POST /v1/streams/{subject}/events", a.appendEvents)
	a.handle("GET /v1/streams/{subject}/events", a.authorizeRun(a.checkNames(http.HandlerFunc(a.readEvents)), func(r *http.Request, run string) bool {
		return r.PathValue("subject") == domain.FlowSubject(run)
	}))
	v1("POST /v1/runs/{runId}/token", a.issueRunToken)
	v1("PUT /v1/docs/{collection}/{id}", a.saveDocument)
	v1("GET /v1/docs/{collection}/{id}", a.getDocument)
	v1("DELETE /v1/docs/{collection}/{id}", a.deleteDocument)
	v1("GET /v1/docs/{collection}", a.listDocuments)
	v1("PUT /v1/kv/{key}", a.setKey)
	v1("GET /v1/kv/{key}", a.getKey)
	v1("DELETE /v1/kv/{key}", a.deleteKey)
	v1("POST /v1/kv/{key}/incr", a.incrKey)
	a.handle("GET /healthz", http.HandlerFunc(a.healthz))
	a.handle("GET /readyz", http.HandlerFunc(a.readyz))
	// Unknown paths under /v1 take the token too: without it, nothing about
	// the API (not even which paths exist) is told.
	v1("/v1/", func(w http.ResponseWriter, r *http.Request) {
		WriteJSON(w, http.StatusNotFound, errBody(domain.CodeNotFound, "no such endpoint: "+r.Method+" "+r.URL.Path))
	})
}

// Handle registers another handler on the API's mux (the dashboard, the
// flows API); under /v1 it takes the auth token.
func (a *API) Handle(pattern string, h http.Handler) {
	if strings.Contains(pattern, "/v1/") {
		h = a.authorize(h)
	}
	a.handle(pattern, h)
}

// HandleRun registers a handler that a run token may call as well as the
// auth token; allowed says whether a request is within the run a token
// allows (nil: the handler checks RunScope itself).
func (a *API) HandleRun(pattern string, h http.Handler, allowed func(r *http.Request, run string) bool) {
	a.handle(pattern, a.authorizeRun(h, allowed))
}

// CorrelationHeader carries a request's correlation id: taken from the
// request (or X-Request-ID) when it is a valid name, made up otherwise, and
// always echoed on the response. It goes with every change the request
// makes, through the store, the bus and the stream (message metadata
// "correlation_id"), and into the log lines about it.
const CorrelationHeader = "X-Correlation-ID"

// correlationID returns the request's correlation id.
func correlationID(r *http.Request) string {
	for _, h := range []string{CorrelationHeader, "X-Request-ID"} {
		if id := r.Header.Get(h); id != "" && len(id) <= 128 && domain.ValidateEventID(id) == nil {
			return id
		}
	}
	return domain.NewID()
}

// ServeHTTP implements http.Handler: it gives the request its correlation
// id and recovers from panics in handlers.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id := correlationID(r)
	w.Header().Set(CorrelationHeader, id)
	r = r.WithContext(domain.WithCorrelationID(r.Context(), id))
	defer func() {
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler {
				panic(p)
			}
			a.log.ErrorContext(r.Context(), "handler panicked", slog.String("path", r.URL.Path), slog.String("correlation_id", id), slog.Any("panic", p))
			WriteJSON(w, http.StatusInternalServerError, errBody(domain.CodeInternal, "internal error"))
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

// bearer returns the request's token: the Authorization header, or the
// access_token query parameter (EventSource and WebSocket clients cannot
// set headers).
func bearer(r *http.Request) string {
	if got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		return got
	}
	return r.URL.Query().Get("access_token")
}

// refuse answers a request that its token does not allow (401 for a
// missing or bad token, 403 for a run token beyond its run) and logs the
// refusal — with the method, path and client address, never the token.
func (a *API) refuse(w http.ResponseWriter, r *http.Request, code domain.Code, message string) {
	a.log.InfoContext(r.Context(), "request refused", slog.String("method", r.Method), slog.String("path", r.URL.Path),
		slog.String("remote", r.RemoteAddr), slog.String("code", string(code)), slog.String("reason", message),
		slog.String("correlation_id", domain.CorrelationID(r.Context())))
	if code == domain.CodeUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="nvent"`)
	}
	WriteJSON(w, StatusOf(code), errBody(code, message))
}

// tokenDigest hashes a token so that comparing two digests takes the same
// time whatever the tokens' lengths.
func tokenDigest(tok string) []byte {
	d := sha256.Sum256([]byte(tok))
	return d[:]
}

// authorize requires the auth token when one is configured. The token is
// compared in constant time (as SHA-256 digests, so that not even its
// length leaks) and never logged.
func (a *API) authorize(h http.Handler) http.Handler {
	if a.token == "" {
		return h
	}
	want := tokenDigest(a.token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := bearer(r)
		if subtle.ConstantTimeCompare(tokenDigest(got), want) != 1 {
			if auth.IsRunToken(got) {
				if _, err := a.runTokens.Verify(got); err != nil {
					a.refuse(w, r, domain.CodeUnauthorized, domain.PublicMessage(err))
					return
				}
				a.refuse(w, r, domain.CodeForbidden, "a run token only gives access to its own run")
				return
			}
			a.refuse(w, r, domain.CodeUnauthorized, "missing or wrong bearer token")
			return
		}
		h.ServeHTTP(w, r)
	})
}

type runScopeKey struct{}

// RunScope returns the run a request's run token allows; ok is false for a
// request made with the auth token (or with auth off), which may do
// anything.
func RunScope(ctx context.Context) (run string, ok bool) {
	run, ok = ctx.Value(runScopeKey{}).(string)
	return run, ok
}

// authorizeRun accepts the auth token, or a valid run token for a request
// that allowed accepts (nil: any, the handler checks RunScope).
func (a *API) authorizeRun(h http.Handler, allowed func(r *http.Request, run string) bool) http.Handler {
	if a.token == "" {
		return h
	}
	full := a.authorize(h)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := bearer(r)
		if !auth.IsRunToken(got) {
			full.ServeHTTP(w, r)
			return
		}
		run, err := a.runTokens.Verify(got)
		if err != nil {
			a.refuse(w, r, domain.CodeUnauthorized, domain.PublicMessage(err))
			return
		}
		if allowed != nil && !allowed(r, run) {
			a.refuse(w, r, domain.CodeForbidden, "this run token is for another run")
			return
		}
		h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), runScopeKey{}, run)))
	})
}

// issueRunToken serves POST /v1/runs/{runId}/token: a token that lets a
// browser read, subscribe to and resume that run only. Body (optional):
// {"ttlSeconds": N}, default one hour.
func (a *API) issueRunToken(w http.ResponseWriter, r *http.Request) {
	if a.runTokens == nil {
		a.writeError(w, r, domain.Errorf(domain.CodeInvalidInput, "run tokens need auth to be on (NVENT_AUTH_TOKEN)"))
		return
	}
	run := r.PathValue("runId")
	if err := domain.ValidateEventID(run); err != nil {
		a.writeError(w, r, domain.Errorf(domain.CodeInvalidInput, "bad runId: %v", err))
		return
	}
	b := struct {
		TTLSeconds int64 `json:"ttlSeconds"`
	}{}
	body, err := a.readOptionalBody(w, r)
	if err == nil && body != nil {
		err = decodeStrict(body, &b, true)
	}
	if err == nil && (b.TTLSeconds < 0 || b.TTLSeconds > 7*24*3600) {
		err = domain.Errorf(domain.CodeInvalidInput, "ttlSeconds must be between 1 and a week")
	}
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	ttl := time.Hour
	if b.TTLSeconds > 0 {
		ttl = time.Duration(b.TTLSeconds) * time.Second
	}
	tok, exp := a.runTokens.Issue(run, ttl)
	WriteJSON(w, http.StatusCreated, map[string]string{"token": tok, "runId": run, "expiresAt": domain.FormatTime(exp)})
}

func (a *API) healthz(w http.ResponseWriter, r *http.Request) {
	WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
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
	WriteJSON(w, code, map[string]any{"status": status, "checks": checks})
}
