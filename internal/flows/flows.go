// Package flows is the HTTP API for flows and their runs: start a run, read
// one run, and list runs, all of a flow or all of them.
//
// A run is the subject nq:flow:{runId} (domain.FlowSubject) of the store.
// Starting one appends its flow.start event; its state, a handlers.Run, is
// the fold of its events with handlers.ApplyRunEvent. GET /v1/runs/{runId}
// folds them from the store on every request, so it is exact at once; the
// lists read the "runs" collection that the flow-runs wiring keeps from the
// same events, which catches up shortly after each event.
package flows

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/nvent/nvent/internal/domain"
	"github.com/nvent/nvent/internal/handlers"
	"github.com/nvent/nvent/internal/httpapi"
)

// Store is what the API needs of the store (storage.Store is one).
type Store interface {
	Append(ctx context.Context, subject string, events []domain.NewEvent, opts domain.AppendOptions) (domain.AppendResult, error)
	Read(ctx context.Context, subject string, opts domain.ReadOptions) ([]domain.Event, error)
	ListDocuments(ctx context.Context, collection string, opts domain.ListOptions) (domain.DocumentPage, error)
}

// Config tunes the API.
type Config struct {
	// MaxBodyBytes caps a request body (413 beyond it). Default 1 MiB.
	MaxBodyBytes int64
	// BodyTimeout bounds reading one request body. Default 30s.
	BodyTimeout time.Duration
	// MaxScan caps how many run documents one request of
	// GET /v1/flows/{flowName}/runs looks at. Default 10,000.
	MaxScan int
	// Limits bound a run's input (MaxEventDataBytes, 413 beyond it), the
	// page size of the lists (MaxPageSize, 400 beyond it) and the length
	// of run ids (MaxSubjectBytes, with its nq:flow: prefix) and flow names
	// (MaxKeyBytes). Zero fields: the defaults of domain.DefaultLimits.
	Limits domain.Limits
}

func (c *Config) setDefaults() {
	if c.MaxBodyBytes <= 0 {
		c.MaxBodyBytes = 1 << 20
	}
	if c.BodyTimeout <= 0 {
		c.BodyTimeout = httpapi.DefaultBodyTimeout
	}
	if c.MaxScan <= 0 {
		c.MaxScan = 10_000
	}
	c.Limits = c.Limits.Normalize()
}

// API serves the flow and run endpoints. It is safe for concurrent use.
type API struct {
	cfg   Config
	store Store
	log   *slog.Logger
}

// New returns the API over store.
func New(cfg Config, store Store, log *slog.Logger) *API {
	cfg.setDefaults()
	return &API{cfg: cfg, store: store, log: log}
}

// Register adds the API's routes to mux (such as *httpapi.API, which puts
// them behind its authentication):
//
//	POST /v1/flows/{flowName}/runs   start a run; body: its input (any JSON, optional)
//	GET  /v1/runs/{runId}            one run, folded from its events
//	GET  /v1/runs                    a page of runs (?limit=N&after=CURSOR)
//	GET  /v1/flows/{flowName}/runs   a page of the flow's runs (?limit=N&after=CURSOR)
func (a *API) Register(mux interface {
	Handle(pattern string, h http.Handler)
}) {
	mux.Handle("POST /v1/flows/{flowName}/runs", http.HandlerFunc(a.startRun))
	mux.Handle("GET /v1/runs/{runId}", http.HandlerFunc(a.getRun))
	mux.Handle("GET /v1/runs", http.HandlerFunc(a.listRuns))
	mux.Handle("GET /v1/flows/{flowName}/runs", http.HandlerFunc(a.listFlowRuns))
}

// startRun serves POST /v1/flows/{flowName}/runs: it appends the flow.start
// of a new run (id: a fresh UUIDv7; data: the body, null when empty) to the
// run's new subject and answers 201 {"runId","event"}.
func (a *API) startRun(w http.ResponseWriter, r *http.Request) {
	flowName := r.PathValue("flowName")
	if err := a.validateFlowName(flowName); err != nil {
		a.writeError(w, r, err)
		return
	}
	input, err := a.readBody(w, r)
	if err == nil {
		err = a.cfg.Limits.CheckEventData(input)
	}
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	runID := domain.NewID()
	zero := int64(0)
	res, err := a.store.Append(r.Context(), domain.FlowSubject(runID), []domain.NewEvent{{
		Type: handlers.FlowStartType, FlowName: flowName, Data: input,
	}}, domain.AppendOptions{ExpectedSeq: &zero})
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusCreated, map[string]any{"runId": runID, "event": res.Events[0]})
}

// getRun serves GET /v1/runs/{runId}: the fold of the run's events up to
// its last lifecycle event (a flow.*, step.*, emit or await.* event of this
// run), which is what the flow-runs wiring's document holds once it has
// caught up. 404 when the subject holds no such event.
func (a *API) getRun(w http.ResponseWriter, r *http.Request) {
	runID := r.PathValue("runId")
	if err := a.validateRunID(runID); err != nil {
		a.writeError(w, r, err)
		return
	}
	run, err := a.Run(r.Context(), runID)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, run)
}

// Run folds the events of run runID from the store (handlers.RunFold, as
// the flow-runs wiring does); it is a not-found error when there is no such
// run.
func (a *API) Run(ctx context.Context, runID string) (handlers.Run, error) {
	subject := domain.FlowSubject(runID)
	fold := handlers.NewRunFold(runID)
	for {
		evs, err := a.store.Read(ctx, subject, domain.ReadOptions{After: fold.LastSeq(), Limit: domain.MaxReadLimit})
		if err != nil {
			return handlers.Run{}, err
		}
		for _, e := range evs {
			fold.Apply(e)
		}
		if len(evs) < domain.MaxReadLimit {
			break
		}
	}
	run, ok := fold.Run()
	if !ok {
		return handlers.Run{}, domain.Errorf(domain.CodeNotFound, "run %s does not exist", runID)
	}
	return run, nil
}

// page is the answer of the list endpoints.
type page struct {
	Items []json.RawMessage `json:"items"`
	Next  string            `json:"next,omitempty"`
}

// listRuns serves GET /v1/runs?limit=N&after=CURSOR: a page of the run
// documents in run id order; next is absent on the last page.
func (a *API) listRuns(w http.ResponseWriter, r *http.Request) {
	opts, err := a.listOptions(r)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	docs, err := a.store.ListDocuments(r.Context(), handlers.RunsCollection, opts)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	out := page{Items: make([]json.RawMessage, 0, len(docs.Items)), Next: docs.Next}
	for _, d := range docs.Items {
		out.Items = append(out.Items, d.Data)
	}
	httpapi.WriteJSON(w, http.StatusOK, out)
}

// listFlowRuns serves GET /v1/flows/{flowName}/runs?limit=N&after=CURSOR:
// a page of the flow's runs in run id order. The runs collection has no
// index by flow, so this is a scan: it reads the collection from the cursor
// on, page by page, keeping the flow's runs, until it has limit of them or
// the collection ends — or until it has looked at Config.MaxScan
// documents, which bounds the cost of one request: then the page holds
// fewer than limit runs (maybe none) and next is where the scan stopped.
// next is absent once the collection is exhausted.
func (a *API) listFlowRuns(w http.ResponseWriter, r *http.Request) {
	flowName := r.PathValue("flowName")
	if err := a.validateFlowName(flowName); err != nil {
		a.writeError(w, r, err)
		return
	}
	opts, err := a.listOptions(r)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	out := page{Items: []json.RawMessage{}}
	cursor, scanned := opts.After, 0
	for {
		docs, err := a.store.ListDocuments(r.Context(), handlers.RunsCollection, domain.ListOptions{After: cursor, Limit: domain.MaxListLimit})
		if err != nil {
			a.writeError(w, r, err)
			return
		}
		for i, d := range docs.Items {
			cursor = d.ID
			scanned++
			var run struct {
				FlowName string `json:"flowName"`
			}
			if json.Unmarshal(d.Data, &run) != nil || run.FlowName != flowName {
				continue
			}
			out.Items = append(out.Items, d.Data)
			if len(out.Items) == opts.Limit {
				if i < len(docs.Items)-1 || docs.Next != "" {
					out.Next = d.ID
				}
				httpapi.WriteJSON(w, http.StatusOK, out)
				return
			}
		}
		if docs.Next == "" {
			httpapi.WriteJSON(w, http.StatusOK, out)
			return
		}
		if scanned >= a.cfg.MaxScan {
			out.Next = cursor
			httpapi.WriteJSON(w, http.StatusOK, out)
			return
		}
	}
}

// listOptions reads ?limit=N&after=CURSOR (limit: default 100; beyond
// Limits.MaxPageSize, invalid_input).
func (a *API) listOptions(r *http.Request) (domain.ListOptions, error) {
	q := r.URL.Query()
	opts := domain.ListOptions{After: q.Get("after")}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return opts, domain.Errorf(domain.CodeInvalidInput, "limit must be a non-negative integer, not %q", s)
		}
		opts.Limit = n
	}
	if err := a.cfg.Limits.CheckPageSize(opts.Limit); err != nil {
		return opts, err
	}
	if err := a.cfg.Limits.CheckKey("cursor", opts.After); err != nil {
		return opts, err
	}
	return opts.Normalize()
}

// validateFlowName applies the domain's name rules (those of subjects) and
// the key limit to a flow name.
func (a *API) validateFlowName(name string) error {
	if name == "" {
		return domain.Errorf(domain.CodeInvalidInput, "flowName is empty")
	}
	if err := a.cfg.Limits.CheckKey("flowName", name); err != nil {
		return err
	}
	// PrepareAppend checks an event's flowName with those rules and names
	// the field in its message; "flow" is a valid placeholder subject.
	_, err := domain.PrepareAppend("flow", []domain.NewEvent{{Type: handlers.FlowStartType, FlowName: name}})
	return err
}

// validateRunID checks that runID makes a valid run subject within the
// subject limit.
func (a *API) validateRunID(runID string) error {
	if runID == "" {
		return domain.Errorf(domain.CodeInvalidInput, "run id is empty")
	}
	if err := a.cfg.Limits.CheckSubject(domain.FlowSubject(runID)); err != nil {
		return err
	}
	if err := domain.ValidateSubject(domain.FlowSubject(runID)); err != nil {
		return domain.Errorf(domain.CodeInvalidInput, "run id %q does not make a valid subject: %s", runID, domain.PublicMessage(err))
	}
	return nil
}

// readBody reads the optional JSON body: nil when empty (or white space),
// too_large past MaxBodyBytes, invalid_input when it is not one JSON value.
func (a *API) readBody(w http.ResponseWriter, r *http.Request) (json.RawMessage, error) {
	body, err := httpapi.ReadOptionalBody(w, r, a.cfg.MaxBodyBytes, a.cfg.BodyTimeout)
	if err != nil || body == nil {
		return nil, err
	}
	data, err := domain.CompactJSON(body)
	if err != nil {
		msg := "request body is not valid JSON"
		if cause := errors.Unwrap(err); cause != nil {
			msg += ": " + cause.Error()
		}
		return nil, domain.Wrap(domain.CodeInvalidInput, err, msg)
	}
	return data, nil
}

func (a *API) writeError(w http.ResponseWriter, r *http.Request, err error) {
	httpapi.WriteError(w, r, a.log, err)
}
