package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/nvent/nvent/internal/domain"
)

// connectTimeout bounds connecting every fanout client.
const connectTimeout = 2 * time.Minute

// fanout connects cfg.Clients live clients to the second process — client i
// watches run i mod R, as SSE when (i / R) is even and as WebSocket
// otherwise — then appends cfg.Rate events/s spread evenly over the runs, and
// measures commit → delivery to each client, the server's peak RSS and
// goroutines.
func (r *runner) fanout(ctx context.Context, m *Machine) ([]Result, error) {
	cfg := r.cfg
	if cfg.Clients%cfg.Runs != 0 {
		return nil, domain.Errorf(domain.CodeInvalidInput, "--clients (%d) must be a multiple of --runs (%d)", cfg.Clients, cfg.Runs)
	}
	sys, err := r.startSystem(ctx, m)
	if err != nil {
		return nil, err
	}
	perRun := cfg.Clients / cfg.Runs
	epoch := time.Now()
	all, sse, ws := newRecorderAt(perRun, epoch), newRecorderAt((perRun+1)/2, epoch), newRecorderAt(perRun/2, epoch)
	runID := func(i int) string { return "bench-run-" + strconv.Itoa(i) }

	idleRSS, _ := sys.serve.rss()
	mon := startMonitor(ctx, sys.serve)
	defer mon.stop()

	transport := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
		MaxIdleConnsPerHost: -1,
		DisableCompression:  true,
	}
	defer transport.CloseIdleConnections()
	client := &http.Client{Transport: transport}
	cctx, disconnect := context.WithCancel(context.WithoutCancel(ctx))
	defer disconnect()
	var ready, dropped atomic.Int64
	var connectErr atomic.Pointer[error]
	var clients sync.WaitGroup
	subscribed := make(chan struct{}, cfg.Clients)
	gate := make(chan struct{}, 64) // connections being set up at once
	for i := range cfg.Clients {
		run := runID(i % cfg.Runs)
		isSSE := (i/cfg.Runs)%2 == 0
		gate <- struct{}{}
		clients.Go(func() {
			var release sync.Once
			free := func() { release.Do(func() { <-gate }) }
			opened := func() { free(); ready.Add(1); subscribed <- struct{}{} }
			deliver := func(id string) {
				all.Receive(id)
				if isSSE {
					sse.Receive(id)
				} else {
					ws.Receive(id)
				}
			}
			var err error
			if isSSE {
				err = sseClient(cctx, client, sys.serve.URL, "store-sync:append:nq:flow:"+run, opened, deliver)
			} else {
				err = wsClient(cctx, client, sys.serve.URL, run, opened, deliver)
			}
			free()
			if cctx.Err() == nil {
				dropped.Add(1)
				if err != nil {
					connectErr.CompareAndSwap(nil, &err)
				}
			}
		})
	}
	deadline := time.After(connectTimeout)
	for n := 0; n < cfg.Clients; n++ {
		select {
		case <-subscribed:
		case <-deadline:
			return nil, errorf("%d of %d clients subscribed within %v (%d dropped; first error: %v)", ready.Load(), cfg.Clients, connectTimeout, dropped.Load(), errOf(connectErr.Load()))
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if d := dropped.Load(); d > 0 {
			return nil, errorf("%d clients failed while connecting: %v", d, errOf(connectErr.Load()))
		}
	}
	connectedRSS, _ := sys.serve.rss()
	mon.reset()

	var next atomic.Int64
	write := func(ctx context.Context, w int, n int64) (int, error) {
		run := runID(int(next.Add(1)-1) % cfg.Runs)
		res, err := sys.store.Append(ctx, "nq:flow:"+run, []domain.NewEvent{{Type: defaultEventType, Data: payload(w, n)}}, domain.AppendOptions{})
		if err != nil {
			return 0, err
		}
		at := all.Now()
		id := res.Events[0].ID
		all.CommitAt(id, at)
		sse.CommitAt(id, at)
		ws.CommitAt(id, at)
		return 1, nil
	}
	ls := r.load(ctx, ScenarioFanout, all, cfg.Rate, write)
	drain(ctx, all)
	mon.stop()
	disconnect()
	clients.Wait()

	var results []Result
	for _, p := range []struct {
		name string
		rec  *Recorder
	}{{ScenarioFanout, all}, {ScenarioFanout + "-sse", sse}, {ScenarioFanout + "-ws", ws}} {
		res := result(p.name, p.rec, ls)
		res.TargetRate = cfg.Rate
		results = append(results, res)
	}
	results[0].Clients = cfg.Clients
	mon.fill(&results[0])
	results[0].Note = strings.TrimPrefix(results[0].Note+"; ", "; ") + fmt.Sprintf("events_per_sec counts deliveries (one per client per event); server RSS idle %.1f MB, with every client connected %.1f MB; %d clients dropped during the load",
		float64(idleRSS)/(1<<20), float64(connectedRSS)/(1<<20), dropped.Load())
	return results, ctx.Err()
}

func errOf(p *error) error {
	if p == nil {
		return nil
	}
	return *p
}

// sseClient follows topic until ctx ends, calling opened once subscribed and
// deliver with the event id of every message.
func sseClient(ctx context.Context, c *http.Client, base, topic string, opened func(), deliver func(id string)) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/subscribe?topic="+url.QueryEscape(topic), nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "text/event-stream")
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return fmt.Errorf("GET /v1/subscribe: %s %s", resp.Status, b)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 16*1024), 1<<20)
	var isOpen bool
	for sc.Scan() {
		line := sc.Bytes()
		switch {
		case !isOpen && bytes.HasPrefix(line, []byte(": subscribed")):
			isOpen = true
			opened()
		case bytes.HasPrefix(line, []byte("data: ")):
			if id := jsonString(line, `"eventId":"`); id != "" {
				deliver(id)
			}
		case bytes.HasPrefix(line, []byte("event: error")):
			return fmt.Errorf("SSE error event")
		}
	}
	return sc.Err()
}

// wsClient subscribes to run over a WebSocket until ctx ends.
func wsClient(ctx context.Context, c *http.Client, base, run string, opened func(), deliver func(id string)) error {
	conn, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(base, "http")+"/v1/ws", &websocket.DialOptions{HTTPClient: c})
	if err != nil {
		return err
	}
	defer conn.CloseNow()
	conn.SetReadLimit(1 << 20)
	sub, _ := json.Marshal(map[string]any{"type": "subscribe", "runId": run})
	if err := conn.Write(ctx, websocket.MessageText, sub); err != nil {
		return err
	}
	for {
		_, b, err := conn.Read(ctx)
		if err != nil {
			return err
		}
		switch {
		case bytes.HasPrefix(b, []byte(`{"event":`)) || bytes.Contains(b, []byte(`"type":"event"`)):
			var msg struct {
				Event struct {
					ID string `json:"id"`
				} `json:"event"`
			}
			if json.Unmarshal(b, &msg) == nil && msg.Event.ID != "" {
				deliver(msg.Event.ID)
			}
		case bytes.Contains(b, []byte(`"type":"subscribed"`)):
			opened()
		case bytes.Contains(b, []byte(`"type":"error"`)):
			return fmt.Errorf("WebSocket error message: %s", b)
		}
	}
}

// jsonString returns the string value after key in a JSON line (for keys
// whose values need no unescaping, such as event ids).
func jsonString(line []byte, key string) string {
	i := bytes.Index(line, []byte(key))
	if i < 0 {
		return ""
	}
	rest := line[i+len(key):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 {
		return ""
	}
	return string(rest[:j])
}

// monitor samples the second process's RSS (every 100ms; and into a series
// every 10s) and goroutines (every second, from /metrics) and keeps the
// peaks.
type monitor struct {
	mu         sync.Mutex
	rss        int64
	series     []float64 // MB
	goroutines int
	cpu0, own0 time.Duration // CPU used at the start: the second process's and the bench's
	cpuErr     error
	p          *serveProc
	cancel     context.CancelFunc
	done       chan struct{}
	once       sync.Once
}

const seriesEvery = 10 * time.Second

func startMonitor(ctx context.Context, p *serveProc) *monitor {
	mctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	m := &monitor{cancel: cancel, done: make(chan struct{}), p: p}
	m.cpu0, m.cpuErr = p.cpu()
	m.own0, _ = procCPU(os.Getpid())
	go func() {
		defer close(m.done)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		last := time.Time{}
		for i := 0; ; i++ {
			if rss, err := p.rss(); err == nil {
				m.mu.Lock()
				m.rss = max(m.rss, rss)
				if time.Since(last) >= seriesEvery {
					m.series = append(m.series, round(float64(rss)/(1<<20), 1))
					last = time.Now()
				}
				m.mu.Unlock()
			}
			if i%10 == 0 {
				if g, err := p.metric(mctx, "go_goroutines"); err == nil {
					m.mu.Lock()
					m.goroutines = max(m.goroutines, int(g))
					m.mu.Unlock()
				}
			}
			select {
			case <-mctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return m
}

// reset forgets the peaks, the series and the CPU used so far.
func (m *monitor) reset() {
	m.mu.Lock()
	m.rss, m.goroutines, m.series = 0, 0, nil
	m.cpu0, m.cpuErr = m.p.cpu()
	m.own0, _ = procCPU(os.Getpid())
	m.mu.Unlock()
}

// stop ends the sampling and returns the peaks.
func (m *monitor) stop() (rss int64, goroutines int) {
	m.once.Do(func() { m.cancel(); <-m.done })
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.rss, m.goroutines
}

// fill stops the monitor and puts what it saw into res.
func (m *monitor) fill(res *Result) {
	rss, g := m.stop()
	m.mu.Lock()
	defer m.mu.Unlock()
	res.PeakRSSMB, res.PeakGoroutines, res.RSSMB = round(float64(rss)/(1<<20), 1), g, m.series
	if cpu, err := m.p.cpu(); err == nil && m.cpuErr == nil {
		res.ServerCPUSec = round((cpu - m.cpu0).Seconds(), 2)
	}
	if own, err := procCPU(os.Getpid()); err == nil {
		res.BenchCPUSec = round((own - m.own0).Seconds(), 2)
	}
}

// httpAppend runs the baseline, then append-e2e's load through POST
// /v1/streams/{subject}/events on the second process with keep-alive
// clients (one connection per writer); the commit is the 201.
func (r *runner) httpAppend(ctx context.Context, m *Machine) ([]Result, error) {
	cfg := r.cfg
	base, err := r.baseline(ctx, m)
	if err != nil {
		return nil, err
	}
	results := []Result{base}
	sys, err := r.startSystem(ctx, m)
	if err != nil {
		return results, err
	}
	transport := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
		MaxIdleConnsPerHost: cfg.Concurrency,
		MaxConnsPerHost:     cfg.Concurrency,
		DisableCompression:  true,
	}
	defer transport.CloseIdleConnections()
	client := &http.Client{Transport: transport, Timeout: 30 * time.Second}
	rec := NewRecorder(1)
	sys.recv.Store(rec)
	defer sys.recv.Store(nil)
	write := func(ctx context.Context, w int, n int64) (int, error) {
		id := domain.NewID()
		body, err := json.Marshal(map[string]any{"id": id, "type": defaultEventType, "data": payload(w, n)})
		if err != nil {
			return 0, err
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, sys.serve.URL+"/v1/streams/"+url.PathEscape(r.subjectOf(w, n))+"/events", bytes.NewReader(body))
		if err != nil {
			return 0, err
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64*1024))
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			return 0, fmt.Errorf("POST: %s %s", resp.Status, b)
		}
		rec.Commit(id)
		return 1, nil
	}
	mon := startMonitor(ctx, sys.serve)
	defer mon.stop()
	ls := r.load(ctx, ScenarioHTTPAppend, rec, 0, write)
	drain(ctx, rec)
	res := result(ScenarioHTTPAppend, rec, ls)
	mon.fill(&res)
	if base.EventsPerSec > 0 {
		b, ratio := base.EventsPerSec, res.EventsPerSec/base.EventsPerSec
		res.BaselineEventsPerSec, res.Ratio = &b, &ratio
	}
	return append(results, res), ctx.Err()
}
