// Package dashboard serves nvent's live dashboard: one HTML page, its
// script and its style sheet, embedded in the binary. The page reads runs
// and events through the public API (/v1/runs, /v1/streams/…, /v1/ws), so
// it holds no data of its own and needs no authentication: with a token
// configured, the user opens it as /?access_token=TOKEN and the page passes
// the token on.
package dashboard

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"net/http"
	"path"
	"strings"
	"time"
)

//go:embed static
var static embed.FS

type asset struct {
	name  string // for ServeContent
	ctype string
	etag  string
	body  []byte
}

// assets are the files by the path they are served at.
var assets = func() map[string]asset {
	m := map[string]asset{}
	for file, ctype := range map[string]string{
		"index.html": "text/html; charset=utf-8",
		"app.js":     "text/javascript; charset=utf-8",
		"app.css":    "text/css; charset=utf-8",
	} {
		body, err := static.ReadFile("static/" + file)
		if err != nil {
			panic("dashboard: " + err.Error()) // embedded: cannot happen
		}
		sum := sha256.Sum256(body)
		m["/"+file] = asset{name: file, ctype: ctype, etag: `"` + hex.EncodeToString(sum[:8]) + `"`, body: body}
	}
	m["/"] = m["/index.html"]
	return m
}()

// csp lets the page load only its own script, style and connections (the
// API and the WebSocket on the same host).
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; " +
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// Handler serves the dashboard: GET (and HEAD) of / or /index.html, and
// /app.js and /app.css. Any other path is 404, any other method 405. Mount
// it at "/" (or under a prefix with http.StripPrefix: the page refers to
// its assets relatively, and to the API at /v1).
func Handler() http.Handler {
	return http.HandlerFunc(serve)
}

func serve(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	if p == "" {
		p = "/"
	}
	if p != "/" {
		p = path.Clean(p)
	}
	a, ok := assets[p]
	if !ok {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		_, _ = w.Write([]byte(`{"error":{"code":"not_found","message":"no such page"}}` + "\n"))
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusMethodNotAllowed)
		_, _ = w.Write([]byte(`{"error":{"code":"invalid_input","message":"method not allowed"}}` + "\n"))
		return
	}
	h := w.Header()
	h.Set("Content-Type", a.ctype)
	h.Set("ETag", a.etag)
	h.Set("Cache-Control", "no-cache") // revalidate: a new binary shows its new page at once
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer") // the URL may hold access_token
	if strings.HasSuffix(a.name, ".html") {
		h.Set("Content-Security-Policy", csp)
		h.Set("X-Frame-Options", "DENY")
	}
	http.ServeContent(w, r, a.name, time.Time{}, bytes.NewReader(a.body))
}
