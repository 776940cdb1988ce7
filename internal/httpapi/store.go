package httpapi

import (
	"encoding/json"
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
	body, err := a.readBody(w, r)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(body, &probe); err != nil {
		a.writeError(w, r, domain.Wrap(domain.CodeInvalidInput, err, "request body must be a JSON object: "+err.Error()))
		return
	}
	var batch appendBatch
	if _, ok := probe["events"]; ok {
		err = decodeStrict(body, &batch, true)
	} else {
		batch.Events = make([]domain.NewEvent, 1)
		err = decodeStrict(body, &batch.Events[0], true)
	}
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	res, err := a.store.Append(r.Context(), r.PathValue("subject"), batch.Events, domain.AppendOptions{ExpectedSeq: batch.ExpectedSeq})
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
func (a *API) listDocuments(w http.ResponseWriter, r *http.Request) {
	limit, err := intParam(r.URL.Query().Get("limit"), "limit")
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	page, err := a.store.ListDocuments(r.Context(), r.PathValue("collection"), domain.ListOptions{After: r.URL.Query().Get("after"), Limit: int(limit)})
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
