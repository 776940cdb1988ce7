package e2e

// Browser tests of the dashboard (GET /): Debian's Chromium, headless,
// driven through the DevTools protocol by chromedp. TestDashboardLive runs
// the real binary; TestDashboardResumes runs the page against a small fake
// server that drops the WebSocket, repeats events and leaves gaps, to check
// that the page resumes from the last seq it shows without losing or
// doubling an event.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"image/png"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/nvent/nvent/internal/dashboard"
)

// chromiumBinary is where Debian's chromium package puts the browser.
const chromiumBinary = "/usr/bin/chromium"

// browser is one headless Chromium with one tab.
type browser struct {
	t   *testing.T
	ctx context.Context // the tab

	mu      sync.Mutex
	console []string      // what the page logged, and its uncaught exceptions
	diag    func() string // more to print when a wait fails (server logs)
}

// openBrowser starts Chromium with a fresh profile; it is closed when the
// test ends, after a screenshot if the test failed.
func openBrowser(t *testing.T) *browser {
	t.Helper()
	path := chromiumBinary
	if _, err := os.Stat(path); err != nil {
		if p, lerr := exec.LookPath("chromium"); lerr == nil {
			path = p
		} else {
			t.Fatalf("the browser tests need Chromium at %s (Debian package \"chromium\": apt-get install -y chromium): %v", chromiumBinary, err)
		}
	}
	profile := t.TempDir()
	out := &lockedBuffer{} // Chromium's own output, for the failure report
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.NoFirstRun,
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(profile),
		chromedp.WindowSize(1280, 860),
		chromedp.CombinedOutput(out),
	)
	ctx, cancel := chromedp.NewContext(allocCtx)
	b := &browser{t: t, ctx: ctx}
	// The first action starts the browser; it must not carry a deadline
	// (that would end the browser with it), so it is bounded from outside.
	started := make(chan error, 1)
	go func() { started <- chromedp.Do(ctx) }()
	select {
	case err := <-started:
		if err != nil {
			cancel()
			cancelAlloc()
			t.Fatalf("starting Chromium (%s): %v\n%s", path, err, out.String())
		}
	case <-time.After(60 * time.Second):
		cancel()
		cancelAlloc()
		t.Fatalf("Chromium (%s) did not start within 60s\n%s", path, out.String())
	}
	messages := chromedp.Console(ctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			b.mu.Lock()
			b.console = append(b.console, fmt.Sprintf("%s:%d %s", m.URL, m.Line+1, m))
			b.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		if t.Failed() {
			b.saveScreenshot("dashboard-failure.png")
		}
		stop, cancelStop := context.WithTimeout(ctx, 10*time.Second)
		defer cancelStop()
		_ = chromedp.Cancel(stop)
		cancel()
		cancelAlloc() // waits for the process, so the profile can be removed
	})
	return b
}

// lockedBuffer lets Chromium's output be written and read concurrently.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// report describes the page for a failure message.
func (b *browser) report() string {
	var s strings.Builder
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	text, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : document.documentElement.outerHTML`))
	if err != nil {
		text = "(unreadable: " + err.Error() + ")"
	}
	fmt.Fprintf(&s, "\n--- page text ---\n%s\n", text)
	b.mu.Lock()
	fmt.Fprintf(&s, "--- browser console ---\n%s\n", strings.Join(b.console, "\n"))
	b.mu.Unlock()
	if b.diag != nil {
		s.WriteString(b.diag())
	}
	return s.String()
}

// do runs actions, failing the test with what is on the page if one fails.
func (b *browser) do(what string, within time.Duration, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, within)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.t.Fatalf("%s: %v%s", what, err, b.report())
	}
}

// waitFor polls the JavaScript expression cond in the page until it is
// true, and fails the test naming what was awaited after within.
func (b *browser) waitFor(what string, within time.Duration, cond string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, within+5*time.Second)
	defer cancel()
	_, err := chromedp.Run(ctx, chromedp.Poll[bool]("!!("+cond+")",
		chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(within)))
	if err != nil {
		if errors.Is(err, chromedp.ErrPollingTimeout) {
			b.t.Fatalf("after %v, still waiting for %s\n(condition: %s)%s", within, what, cond, b.report())
		}
		b.t.Fatalf("waiting for %s: %v%s", what, err, b.report())
	}
}

// eval returns the value of a JavaScript expression in the page.
func eval[T any](b *browser, expr string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		b.t.Fatalf("evaluating %s: %v%s", expr, err, b.report())
	}
	return v
}

// screenshot saves the viewport as a PNG under the test's temporary
// directory and, when NVENT_SCREENSHOT_DIR is set, there too; it returns
// the image.
func (b *browser) screenshot(name string) []byte {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	img, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		b.t.Fatalf("screenshot: %v", err)
	}
	dirs := []string{b.t.TempDir()}
	if d := os.Getenv("NVENT_SCREENSHOT_DIR"); d != "" {
		dirs = append(dirs, d)
	}
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			b.t.Fatal(err)
		}
		f := filepath.Join(d, name)
		if err := os.WriteFile(f, img, 0o644); err != nil {
			b.t.Fatal(err)
		}
		b.t.Logf("screenshot: %s", f)
	}
	return img
}

// saveScreenshot is screenshot for a failing test: errors are only logged.
func (b *browser) saveScreenshot(name string) {
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	img, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		b.t.Logf("no failure screenshot: %v", err)
		return
	}
	dir := os.Getenv("NVENT_SCREENSHOT_DIR")
	if dir == "" {
		dir = os.TempDir()
	}
	f := filepath.Join(dir, strings.NewReplacer("/", "_").Replace(b.t.Name())+"-"+name)
	if err := os.WriteFile(f, img, 0o644); err == nil {
		b.t.Logf("failure screenshot: %s", f)
	}
}

// checkPNG fails unless img is a non-empty, decodable PNG.
func checkPNG(t *testing.T, img []byte) {
	t.Helper()
	if len(img) == 0 || !bytes.HasPrefix(img, []byte("\x89PNG\r\n\x1a\n")) {
		t.Fatalf("the screenshot is not a PNG (%d bytes)", len(img))
	}
	cfg, err := png.DecodeConfig(bytes.NewReader(img))
	if err != nil || cfg.Width == 0 || cfg.Height == 0 {
		t.Fatalf("the screenshot does not decode as a PNG: %v (%dx%d)", err, cfg.Width, cfg.Height)
	}
}

// js renders v as a JavaScript literal.
func js(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// runRow is the JavaScript for the runs-list row of runID (or null).
func runRow(runID string) string {
	return `document.querySelector('#runs-body tr[data-run-id="' + CSS.escape(` + js(runID) + `) + '"]')`
}

// eventRow is the JavaScript for the timeline row of seq (or null).
func eventRow(seq int64) string {
	return fmt.Sprintf(`document.querySelector('#events-body tr[data-seq="%d"]')`, seq)
}

// timelineSeqs is the JavaScript for the seqs the timeline shows, in order.
const timelineSeqs = `[...document.querySelectorAll('#events-body tr')].map(r => Number(r.dataset.seq))`

// authedDo is Proc.Do with the bearer token.
func authedDo(t *testing.T, p *Proc, token, method, path, body string) (int, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, p.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// TestDashboardLive opens the dashboard of a real nvent, starts a run
// through the API and appends step events to it, and sees the run, its
// status and its events appear in the page without a reload; then starts a
// run with the page's own form.
func TestDashboardLive(t *testing.T) {
	const token = "dashboard-secret"
	p := Serve(t, bin, t.TempDir(), "NVENT_CLIENT_MESSAGES=true", "NVENT_AUTH_TOKEN="+token)
	b := openBrowser(t)
	b.diag = func() string { return "--- nvent log ---\n" + p.Logs() }
	api := func(method, path, body string) (int, []byte) { return authedDo(t, p, token, method, path, body) }
	const wait = 15 * time.Second

	b.do("opening the dashboard", 30*time.Second, chromedp.Navigate(p.URL+"/?access_token="+token))
	b.waitFor("the dashboard page (GET / serves internal/dashboard)", wait,
		`document.title.includes('nvent') && document.querySelector('#start-form') && document.querySelector('#runs-body')`)
	// A reload would lose this mark: everything below must arrive live.
	b.do("marking the page", 5*time.Second, chromedp.Evaluate[chromedp.Void](`window.__noReload = true`))
	b.waitFor("the WebSocket to connect (GET /v1/ws with access_token)", wait, `document.querySelector('#conn').dataset.state === 'open'`)

	// A run started through the API appears in the list.
	status, body := api("POST", "/v1/flows/demo/runs", `{"order":42}`)
	if status != http.StatusCreated {
		t.Fatalf("POST /v1/flows/demo/runs: %d %s; want 201 {\"runId\",\"event\"}", status, body)
	}
	var started struct {
		RunID string `json:"runId"`
	}
	if err := json.Unmarshal(body, &started); err != nil || started.RunID == "" {
		t.Fatalf("POST /v1/flows/demo/runs answered %s: no runId (%v)", body, err)
	}
	run := started.RunID
	b.waitFor("run "+run+" of flow demo in the runs list (GET /v1/runs or the client:ui:runs topic)", wait,
		runRow(run)+` && `+runRow(run)+`.cells[1].textContent === 'demo'`)

	// Its timeline shows the events the store has, then the new ones live.
	b.do("clicking the run", wait, chromedp.Click(chromedp.CSS(`#runs-body tr[data-run-id="`+run+`"]`)))
	b.waitFor("the timeline of "+run+" to show its first event (history over the WebSocket)", wait,
		`document.querySelector('#detail-title').textContent.includes(`+js(run)+`) && `+eventRow(1))
	appendOne := func(event string) int64 {
		t.Helper()
		status, body := api("POST", "/v1/streams/nq:flow:"+run+"/events", event)
		evs := decodeEvents(t, body)
		if status != http.StatusCreated || len(evs) != 1 {
			t.Fatalf("append %s: %d %s", event, status, body)
		}
		return evs[0].Seq
	}
	seq := appendOne(`{"type":"step.started","stepName":"fetch","stepId":"s1","attempt":1,"data":{"url":"https://example.test/a"}}`)
	b.waitFor(fmt.Sprintf("step.started (seq %d) in the timeline, live", seq), wait,
		eventRow(seq)+` && `+eventRow(seq)+`.cells[1].textContent === 'step.started' && `+eventRow(seq)+`.cells[2].textContent.startsWith('fetch')`)
	seq = appendOne(`{"type":"step.completed","stepName":"fetch","stepId":"s1","attempt":1,"data":{"status":200}}`)
	b.waitFor(fmt.Sprintf("step.completed (seq %d) in the timeline, live", seq), wait,
		eventRow(seq)+` && `+eventRow(seq)+`.cells[1].textContent === 'step.completed' && `+eventRow(seq)+`.cells[4].textContent.includes('200')`)
	b.waitFor("the run's steps to read 1/1 (client:ui:runs)", wait, runRow(run)+`.querySelector('.steps-done').textContent === '1/1'`)
	appendOne(`{"type":"flow.completed","data":{"ok":true}}`)
	b.waitFor("the run to turn completed, in green (client:ui:runs)", wait,
		runRow(run)+`.dataset.status === 'completed' && getComputedStyle(`+runRow(run)+`.querySelector('.status')).backgroundColor === 'rgb(31, 138, 76)'`)

	// The timeline is exactly the store's events, in order, each once.
	status, body = api("GET", "/v1/streams/nq:flow:"+run+"/events?limit=1000", "")
	if status != http.StatusOK {
		t.Fatalf("reading the run back: %d %s", status, body)
	}
	var want []int64
	for _, e := range decodeEvents(t, body) {
		want = append(want, e.Seq)
	}
	b.waitFor("the timeline to hold every stored event", wait, fmt.Sprintf(`%s.length === %d`, timelineSeqs, len(want)))
	if got := eval[[]int64](b, timelineSeqs); !slices.Equal(got, want) {
		t.Fatalf("the timeline shows seqs %v; the store has %v", got, want)
	}
	checkPNG(t, b.screenshot("dashboard.png"))

	// A run started with the form is listed first, selected, with its timeline.
	b.do("starting a run with the form", wait,
		chromedp.SetValue(chromedp.CSS("#flow-name"), "demo"),
		chromedp.SetValue(chromedp.CSS("#flow-input"), `{"via":"form"}`),
		chromedp.Click(chromedp.CSS("#start-button")))
	b.waitFor("the form's run first in the list and selected", wait,
		`document.querySelector('#start-result').textContent.startsWith('started ') && `+
			`(r => r && r.dataset.runId !== `+js(run)+` && r.getAttribute('aria-selected') === 'true')(document.querySelector('#runs-body tr'))`)
	b.waitFor("the form's run's first event in the timeline", wait, eventRow(1))
	if !eval[bool](b, `window.__noReload === true`) {
		t.Fatal("the page reloaded")
	}
}

// TestDashboardResumes runs the page against a fake server that drops the
// WebSocket, repeats events and skips one: the page must resubscribe from
// the last seq it shows, show every event once in seq order, fill the gap
// from the store, keep a run's newest state, and pass the access token on
// every request.
func TestDashboardResumes(t *testing.T) {
	f := newFakeServer(t, "tok")
	f.addRun(fakeRun("r1", "2026-01-02T10:00:01.000Z", "running", 3))
	for i := 1; i <= 3; i++ {
		f.addEvent("r1")
	}
	b := openBrowser(t)
	b.diag = f.report
	const wait = 10 * time.Second

	b.do("opening the dashboard", 30*time.Second, chromedp.Navigate(f.srv.URL+"/?access_token=tok#run=r1"))
	b.do("recording the connection states", 5*time.Second, chromedp.Evaluate[chromedp.Void](`
		window.__states = [];
		new MutationObserver(() => window.__states.push(document.querySelector('#conn').dataset.state))
			.observe(document.querySelector('#conn'), {attributes: true, attributeFilter: ['data-state']});
		window.__noReload = true`))
	b.waitFor("the connection", wait, `document.querySelector('#conn').dataset.state === 'open'`)
	b.waitFor("run r1 in the list", wait, runRow("r1")+` && `+runRow("r1")+`.dataset.status === 'running'`)
	b.waitFor("events 1-3 of r1", wait, timelineSeqs+`.join() === '1,2,3'`)
	first := f.nextConn(t, wait)
	f.waitSubscribed(t, first, "r1", wait)

	// A live event, then the connection drops while event 5 is stored.
	f.send(first, map[string]any{"type": "event", "runId": "r1", "event": f.addEvent("r1")})
	b.waitFor("live event 4", wait, timelineSeqs+`.join() === '1,2,3,4'`)
	f.addEvent("r1")
	first.close()
	second := f.nextConn(t, wait)
	if after := f.waitSubscribed(t, second, "r1", wait); after != 4 {
		t.Fatalf("after the reconnect the page subscribed with afterSeq %d; want 4, the last seq it showed", after)
	}
	// The fake's history repeats seq 4; send 5 again live as well.
	f.send(second, map[string]any{"type": "event", "runId": "r1", "event": f.event("r1", 5)})
	b.waitFor("events 1-5, each once, after the reconnect", wait, timelineSeqs+`.join() === '1,2,3,4,5'`)
	if s := eval[[]string](b, `window.__states`); !slices.Contains(s, "reconnecting") || s[len(s)-1] != "open" {
		t.Fatalf("connection states %v: want reconnecting, then open", s)
	}

	// Event 7 arrives live but 6 never does: the page reads 6 from the store.
	f.addEvent("r1")
	f.send(second, map[string]any{"type": "event", "runId": "r1", "event": f.addEvent("r1")})
	b.waitFor("the gap (6) filled from the store", wait, timelineSeqs+`.join() === '1,2,3,4,5,6,7'`)

	// Run updates: a newer state wins, a stale one is ignored, a newer run goes first.
	f.send(second, map[string]any{"type": "event", "topic": "client:ui:runs", "data": fakeRun("r1", "2026-01-02T10:00:01.000Z", "completed", 8)})
	f.send(second, map[string]any{"type": "event", "topic": "client:ui:runs", "data": fakeRun("r1", "2026-01-02T10:00:01.000Z", "running", 3)})
	f.send(second, map[string]any{"type": "event", "topic": "client:ui:runs", "data": fakeRun("r2", "2026-01-02T11:00:00.000Z", "failed", 2)})
	b.waitFor("run r2", wait, runRow("r2"))
	if got := eval[[]string](b, `[...document.querySelectorAll('#runs-body tr')].map(r => r.dataset.runId + ':' + r.dataset.status)`); !slices.Equal(got, []string{"r2:failed", "r1:completed"}) {
		t.Fatalf("runs list %v; want the newest first and r1's newest state: [r2:failed r1:completed]", got)
	}
	if !eval[bool](b, `window.__noReload === true`) {
		t.Fatal("the page reloaded")
	}
	if bad := f.unauthorized(); len(bad) > 0 {
		t.Fatalf("requests without access_token=tok: %v", bad)
	}
	checkPNG(t, b.screenshot("dashboard-fake.png"))
}

// ---- the fake server ----

type fakeServer struct {
	srv   *httptest.Server
	token string
	conns chan *fakeConn

	mu      sync.Mutex
	runs    map[string]map[string]any
	events  map[string][]map[string]any
	noToken []string
	log     []string
}

func fakeRun(id, startedAt, status string, lastSeq int) map[string]any {
	return map[string]any{"runId": id, "flowName": "demo", "status": status, "startedAt": startedAt, "lastSeq": lastSeq,
		"steps": map[string]int{"started": 1, "completed": 1, "failed": 0}}
}

func newFakeServer(t *testing.T, token string) *fakeServer {
	f := &fakeServer{token: token, conns: make(chan *fakeConn, 10), runs: map[string]map[string]any{}, events: map[string][]map[string]any{}}
	mux := http.NewServeMux()
	mux.Handle("GET /", dashboard.Handler())
	mux.HandleFunc("GET /v1/runs", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		var items []map[string]any
		for id, run := range f.runs {
			items = append(items, map[string]any{"collection": "runs", "id": id, "version": 1, "data": run})
		}
		f.mu.Unlock()
		writeFakeJSON(w, map[string]any{"items": items})
	})
	mux.HandleFunc("GET /v1/streams/{subject}/events", func(w http.ResponseWriter, r *http.Request) {
		after, _ := strconv.Atoi(r.URL.Query().Get("after"))
		writeFakeJSON(w, map[string]any{"events": f.after(strings.TrimPrefix(r.PathValue("subject"), "nq:flow:"), after)})
	})
	mux.HandleFunc("GET /v1/ws", f.serveWS)
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.log = append(f.log, r.Method+" "+r.URL.String())
		if strings.HasPrefix(r.URL.Path, "/v1/") && r.URL.Query().Get("access_token") != f.token {
			f.noToken = append(f.noToken, r.Method+" "+r.URL.String())
		}
		f.mu.Unlock()
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func writeFakeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func (f *fakeServer) addRun(run map[string]any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.runs[run["runId"].(string)] = run
}

// addEvent stores the next event of runID and returns it.
func (f *fakeServer) addEvent(runID string) map[string]any {
	f.mu.Lock()
	defer f.mu.Unlock()
	seq := len(f.events[runID]) + 1
	typ := "step.started"
	if seq == 1 {
		typ = "flow.start"
	}
	e := map[string]any{"id": fmt.Sprintf("e%d", seq), "subject": "nq:flow:" + runID, "seq": seq, "type": typ,
		"runId": runID, "flowName": "demo", "stepName": fmt.Sprintf("step-%d", seq), "data": map[string]int{"n": seq},
		"ts": time.Date(2026, 1, 2, 10, 0, seq, 0, time.UTC).Format("2006-01-02T15:04:05.000Z")}
	f.events[runID] = append(f.events[runID], e)
	return e
}

func (f *fakeServer) event(runID string, seq int) map[string]any {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.events[runID][seq-1]
}

func (f *fakeServer) after(runID string, after int) []map[string]any {
	f.mu.Lock()
	defer f.mu.Unlock()
	evs := f.events[runID]
	return slices.Clone(evs[min(max(after, 0), len(evs)):])
}

func (f *fakeServer) unauthorized() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.noToken)
}

func (f *fakeServer) report() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return "--- fake server requests ---\n" + strings.Join(f.log, "\n") + "\n"
}

// fakeConn is the server side of one WebSocket (RFC 6455, text frames only).
type fakeConn struct {
	conn net.Conn
	wmu  sync.Mutex
	subs chan map[string]any // the subscribe messages the page sent
}

func (c *fakeConn) close() { _ = c.conn.Close() }

func (f *fakeServer) send(c *fakeConn, msg any) {
	b, _ := json.Marshal(msg)
	_ = c.write(0x1, b)
}

func (c *fakeConn) write(op byte, p []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	h := []byte{0x80 | op}
	switch n := len(p); {
	case n < 126:
		h = append(h, byte(n))
	case n < 1<<16:
		h = append(h, 126)
		h = binary.BigEndian.AppendUint16(h, uint16(n))
	default:
		h = append(h, 127)
		h = binary.BigEndian.AppendUint64(h, uint64(n))
	}
	_, err := c.conn.Write(append(h, p...))
	return err
}

func readFrame(r *bufio.Reader) (op byte, payload []byte, err error) {
	var h [2]byte
	if _, err = io.ReadFull(r, h[:]); err != nil {
		return 0, nil, err
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var l [2]byte
		_, err = io.ReadFull(r, l[:])
		n = uint64(binary.BigEndian.Uint16(l[:]))
	case 127:
		var l [8]byte
		_, err = io.ReadFull(r, l[:])
		n = binary.BigEndian.Uint64(l[:])
	}
	if err != nil || n > 1<<20 {
		return 0, nil, fmt.Errorf("frame length %d: %v", n, err)
	}
	var mask [4]byte
	if h[1]&0x80 != 0 {
		if _, err = io.ReadFull(r, mask[:]); err != nil {
			return 0, nil, err
		}
	}
	payload = make([]byte, n)
	if _, err = io.ReadFull(r, payload); err != nil {
		return 0, nil, err
	}
	for i := range payload {
		payload[i] ^= mask[i%4]
	}
	return h[0] & 0x0f, payload, nil
}

// serveWS answers subscribes with the history after afterSeq (repeating
// the event at afterSeq, which a page must tolerate) and "subscribed".
func (f *fakeServer) serveWS(w http.ResponseWriter, r *http.Request) {
	if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		http.Error(w, "not a WebSocket request", http.StatusBadRequest)
		return
	}
	sum := sha1.Sum([]byte(r.Header.Get("Sec-WebSocket-Key") + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	conn, rw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	_, _ = rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " +
		base64.StdEncoding.EncodeToString(sum[:]) + "\r\n\r\n")
	if rw.Flush() != nil {
		conn.Close()
		return
	}
	c := &fakeConn{conn: conn, subs: make(chan map[string]any, 100)}
	f.conns <- c
	go func() {
		defer conn.Close()
		for {
			op, p, err := readFrame(rw.Reader)
			if err != nil {
				return
			}
			switch op {
			case 0x8: // close
				_ = c.write(0x8, nil)
				return
			case 0x9: // ping
				_ = c.write(0xA, p)
				continue
			case 0x1:
			default:
				continue
			}
			var msg map[string]any
			if json.Unmarshal(p, &msg) != nil {
				f.send(c, map[string]any{"type": "error", "code": "invalid_input", "message": "not JSON"})
				continue
			}
			switch msg["type"] {
			case "ping":
				f.send(c, map[string]any{"type": "pong"})
			case "subscribe":
				if run, ok := msg["runId"].(string); ok {
					after, _ := msg["afterSeq"].(float64)
					f.send(c, map[string]any{"type": "history", "runId": run, "events": f.after(run, int(after)-1)})
					f.send(c, map[string]any{"type": "subscribed", "runId": run})
				} else {
					f.send(c, map[string]any{"type": "subscribed", "topic": msg["topic"]})
				}
				c.subs <- msg
			}
		}
	}()
}

func (f *fakeServer) nextConn(t *testing.T, within time.Duration) *fakeConn {
	t.Helper()
	select {
	case c := <-f.conns:
		return c
	case <-time.After(within):
		t.Fatalf("no WebSocket connection within %v\n%s", within, f.report())
		return nil
	}
}

// waitSubscribed waits for the page to subscribe to runID on c and
// returns the afterSeq it sent.
func (f *fakeServer) waitSubscribed(t *testing.T, c *fakeConn, runID string, within time.Duration) int {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case m := <-c.subs:
			if m["runId"] == runID {
				after, _ := m["afterSeq"].(float64)
				return int(after)
			}
		case <-deadline:
			t.Fatalf("the page did not subscribe to %s within %v\n%s", runID, within, f.report())
		}
	}
}
