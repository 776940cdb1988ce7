package httpapi

import (
	"encoding/json"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/nvent/nvent/internal/domain"
)

// appendBatch is the batch form of POST /v1/streams/{subject}/events.
type appendBatch struct {
	Events      []domain.NewEvent `json:"events"`
	ExpectedSeq *int64            `json:"expectedSeq"`
}

// appendEvents takes one event or {"events":[…],"expectedSeq":N}. It answers
// 201 when it wrote events and 200 when every event was already stored (an
// idempotent retry), with the stored events either way.
func (a *API) appendEvents(w http.ResponseWriter, r *http.Request) {
	subject := r.PathValue("subject")
	body, err := a.readBody(w, r)
	var batch appendBatch
	if err == nil {
		batch, err = decodeAppend(body)
	}
	if err == nil {
		err = a.limits.CheckEvents(batch.Events)
	}
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	res, err := a.store.Append(r.Context(), subject, batch.Events, domain.AppendOptions{ExpectedSeq: batch.ExpectedSeq})
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	status := http.StatusCreated
	if len(res.Appended()) == 0 {
		status = http.StatusOK
	}
	WriteJSON(w, status, map[string]any{"events": res.Events})
}

// decodeAppend decodes the body of POST /v1/streams/{subject}/events: one
// event, or {"events":[…],"expectedSeq":N} (an object with an "events"
// key). Anything else — not one JSON object, an unknown field, a field of
// the wrong type — is invalid_input. It checks the shape only; the events
// themselves are the store's to validate.
func decodeAppend(body []byte) (appendBatch, error) {
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(body, &probe); err != nil {
		return appendBatch{}, domain.Wrap(domain.CodeInvalidInput, err, "request body must be a JSON object: "+err.Error())
	}
	if probe == nil {
		return appendBatch{}, domain.Errorf(domain.CodeInvalidInput, "request body must be a JSON object, not null")
	}
	var batch appendBatch
	var err error
	if _, ok := probe["events"]; ok {
		err = decodeStrict(body, &batch, true)
	} else {
		batch.Events = make([]domain.NewEvent, 1)
		err = decodeStrict(body, &batch.Events[0], true)
	}
	if err != nil {
		return appendBatch{}, err
	}
	return batch, nil
}

// readEvents serves GET /v1/streams/{subject}/events?after=&before=&limit=&types=a,b&order=asc|desc.
func (a *API) readEvents(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var opts domain.ReadOptions
	var err error
	if opts.After, err = intParam(q.Get("after"), "after"); err == nil {
		if opts.Before, err = intParam(q.Get("before"), "before"); err == nil {
			var limit int64
			limit, err = intParam(q.Get("limit"), "limit")
			opts.Limit = int(limit)
		}
	}
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	if t := q.Get("types"); t != "" {
		opts.Types = strings.Split(t, ",")
	}
	opts.Order = domain.Order(q.Get("order"))
	evs, err := a.store.Read(r.Context(), r.PathValue("subject"), opts)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	WriteJSON(w, http.StatusOK, map[string]any{"events": evs})
}

// intParam parses an optional non-negative integer query parameter.
func intParam(s, name string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, domain.Errorf(domain.CodeInvalidInput, "%s must be a non-negative integer, not %q", name, s)
	}
	return n, nil
}

// versionPrecondition reads If-Match (the version the document must be at)
// and If-None-Match: * (it must not exist) into SaveOptions.
func versionPrecondition(r *http.Request) (domain.SaveOptions, error) {
	if inm := strings.TrimSpace(r.Header.Get("If-None-Match")); inm == "*" {
		zero := int64(0)
		return domain.SaveOptions{ExpectedVersion: &zero}, nil
	}
	im := strings.TrimSpace(r.Header.Get("If-Match"))
	if im == "" || im == "*" {
		return domain.SaveOptions{}, nil
	}
	v, err := strconv.ParseInt(strings.Trim(strings.TrimPrefix(im, "W/"), `"`), 10, 64)
	if err != nil || v < 1 {
		return domain.SaveOptions{}, domain.Errorf(domain.CodeInvalidInput, "If-Match must be a document version such as \"3\", not %q", im)
	}
	return domain.SaveOptions{ExpectedVersion: &v}, nil
}

func writeDocument(w http.ResponseWriter, status int, d domain.Document) {
	w.Header().Set("ETag", strconv.Quote(strconv.FormatInt(d.Version, 10)))
	WriteJSON(w, status, d)
}

// saveDocument stores the request body as the document: 201 when it
// created it, 200 when it replaced it, 409 when If-Match does not hold.
func (a *API) saveDocument(w http.ResponseWriter, r *http.Request) {
	opts, err := versionPrecondition(r)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	body, err := a.readBody(w, r)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	d, err := a.store.SaveDocument(r.Context(), r.PathValue("collection"), r.PathValue("id"), body, opts)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	status := http.StatusOK
	if d.Version == 1 {
		status = http.StatusCreated
	}
	writeDocument(w, status, d)
}

func (a *API) getDocument(w http.ResponseWriter, r *http.Request) {
	d, err := a.store.GetDocument(r.Context(), r.PathValue("collection"), r.PathValue("id"))
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeDocument(w, http.StatusOK, d)
}

func (a *API) deleteDocument(w http.ResponseWriter, r *http.Request) {
	opts, err := versionPrecondition(r)
	if err == nil {
		err = a.store.DeleteDocument(r.Context(), r.PathValue("collection"), r.PathValue("id"), opts)
	}
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// listDocuments serves GET /v1/docs/{collection}?after=CURSOR&limit=N.
// limit beyond the largest page is invalid_input.
func (a *API) listDocuments(w http.ResponseWriter, r *http.Request) {
	opts, err := a.ListOptions(r)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	page, err := a.store.ListDocuments(r.Context(), r.PathValue("collection"), opts)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	WriteJSON(w, http.StatusOK, page)
}

// setKeyBody is the body of PUT /v1/kv/{key}.
type setKeyBody struct {
	Value      json.RawMessage `json:"value"`
	TTLSeconds float64         `json:"ttlSeconds"`
}

func (a *API) setKey(w http.ResponseWriter, r *http.Request) {
	var b setKeyBody
	if err := a.decodeJSON(w, r, &b, true); err != nil {
		a.writeError(w, r, err)
		return
	}
	if b.Value == nil {
		a.writeError(w, r, domain.Errorf(domain.CodeInvalidInput, `body needs a "value"`))
		return
	}
	if b.TTLSeconds < 0 || b.TTLSeconds > 10*365*24*3600 {
		a.writeError(w, r, domain.Errorf(domain.CodeInvalidInput, "ttlSeconds must be between 0 (no expiry) and ten years"))
		return
	}
	e, err := a.store.SetKey(r.Context(), r.PathValue("key"), b.Value, time.Duration(b.TTLSeconds*float64(time.Second)))
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	WriteJSON(w, http.StatusOK, e)
}

func (a *API) getKey(w http.ResponseWriter, r *http.Request) {
	e, err := a.store.GetKey(r.Context(), r.PathValue("key"))
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	WriteJSON(w, http.StatusOK, e)
}

func (a *API) deleteKey(w http.ResponseWriter, r *http.Request) {
	if err := a.store.DeleteKey(r.Context(), r.PathValue("key")); err != nil {
		a.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// incrKey adds {"by": N} (default 1; the body may be empty) to the key.
func (a *API) incrKey(w http.ResponseWriter, r *http.Request) {
	b := struct {
		By *int64 `json:"by"`
	}{}
	body, err := a.readOptionalBody(w, r)
	if err == nil && body != nil {
		err = decodeStrict(body, &b, true)
	}
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	by := int64(1)
	if b.By != nil {
		by = *b.By
	}
	e, err := a.store.IncrKey(r.Context(), r.PathValue("key"), by)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	WriteJSON(w, http.StatusOK, e)
}

// ListOptions reads ?limit=N&after=CURSOR of a page of documents (limit:
// default 100; beyond the largest page, invalid_input), with the cursor
// held to the key limit.
func (a *API) ListOptions(r *http.Request) (domain.ListOptions, error) {
	q := r.URL.Query()
	limit, err := intParam(q.Get("limit"), "limit")
	if err != nil {
		return domain.ListOptions{}, err
	}
	if err := a.limits.CheckPageSize(int(min(limit, math.MaxInt32))); err != nil {
		return domain.ListOptions{}, err
	}
	opts := domain.ListOptions{After: q.Get("after"), Limit: int(limit)}
	if err := a.limits.CheckKey("cursor", opts.After); err != nil {
		return domain.ListOptions{}, err
	}
	return opts.Normalize()
}

// pathNames are the path values that name something in the store, and what
// the limits call them.
var pathNames = []struct{ value, kind string }{
	{"subject", "subject"}, {"collection", "collection"}, {"id", "document id"}, {"key", "key"},
}

// checkNames holds the names in a request's path (subject, collection,
// document id, key) to the configured limits before h sees the request.
func (a *API) checkNames(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, n := range pathNames {
			v := r.PathValue(n.value)
			var err error
			if n.value == "subject" {
				err = a.limits.CheckSubject(v)
			} else {
				err = a.limits.CheckKey(n.kind, v)
			}
			if err != nil {
				a.writeError(w, r, err)
				return
			}
		}
		h.ServeHTTP(w, r)
	})
}
