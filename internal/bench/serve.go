package bench

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nvent/nvent/internal/stream"
)

// serveProc is the second nvent process: `nvent serve` from the bench's own
// binary, on a free loopback port.
type serveProc struct {
	URL string // http://127.0.0.1:PORT
	pid int

	cmd  *exec.Cmd
	done chan struct{}
	err  error // set when done is closed

	mu   sync.Mutex
	tail []string // the last log lines
}

const serveLogLines = 200

// startServe starts `nvent serve` on the run's schema and stream prefix,
// waits until it listens and leads the relay, and stops it at cleanup.
func (r *runner) startServe(ctx context.Context, store storeConfig, sc stream.Config) (*serveProc, error) {
	bin := r.cfg.Executable
	if bin == "" {
		var err error
		if bin, err = os.Executable(); err != nil {
			return nil, errorf("finding the nvent binary: %w", err)
		}
	}
	env := make([]string, 0, len(r.cfg.Environ)+16)
	for _, kv := range r.cfg.Environ {
		if !strings.HasPrefix(kv, "NVENT_") {
			env = append(env, kv)
		}
	}
	env = append(env,
		"NVENT_HTTP_ADDR=127.0.0.1:0",
		"NVENT_LOG_FORMAT=json",
		"NVENT_LOG_LEVEL=info",
		"NVENT_INSTANCE_ID=bench-serve",
		"NVENT_STORE="+r.cfg.Store,
		"NVENT_POSTGRES_URL="+r.cfg.PostgresURL,
		"NVENT_POSTGRES_SCHEMA="+cmp.Or(store.pg.Schema, "public"),
		"NVENT_REDIS_URL="+r.cfg.RedisURL,
		"NVENT_REDIS_STORE_PREFIX="+store.redis.Prefix,
		"NVENT_STREAM="+sc.Backend,
		"NVENT_NATS_URL="+r.cfg.NATSURL,
		"NVENT_AMQP_URL="+r.cfg.AMQPURL,
		"NVENT_STREAM_PREFIX="+sc.KeyPrefix,
	)
	cmd := exec.Command(bin, "serve")
	cmd.Env = env
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stdout = io.Discard
	if err := cmd.Start(); err != nil {
		return nil, errorf("starting %s serve: %w", bin, err)
	}
	p := &serveProc{cmd: cmd, pid: cmd.Process.Pid, done: make(chan struct{})}
	addr := make(chan string, 1)
	go p.readLogs(stderr, addr)
	go func() { p.err = cmd.Wait(); close(p.done) }()
	r.onCleanup(func() {
		if err := p.stop(serveStopTimeout); err != nil {
			fmt.Fprintf(r.cfg.Log, "bench: stopping nvent serve: %v\n%s\n", err, p.logs())
		}
	})
	select {
	case a := <-addr:
		p.URL = "http://" + a
	case <-p.done:
		return nil, errorf("nvent serve exited before listening: %v\n%s", p.err, p.logs())
	case <-time.After(serveStartTimeout):
		return nil, errorf("nvent serve did not listen within %v\n%s", serveStartTimeout, p.logs())
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	// The relay must lead before the load starts.
	deadline := time.Now().Add(serveStartTimeout)
	for {
		v, err := p.metric(ctx, "nvent_relay_leader")
		if err == nil && v == 1 {
			return p, nil
		}
		if time.Now().After(deadline) {
			return nil, errorf("nvent serve did not lead the relay within %v (%v)\n%s", serveStartTimeout, err, p.logs())
		}
		select {
		case <-p.done:
			return nil, errorf("nvent serve exited: %v\n%s", p.err, p.logs())
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (p *serveProc) readLogs(r io.Reader, addr chan<- string) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		p.mu.Lock()
		p.tail = append(p.tail, line)
		if len(p.tail) > serveLogLines {
			p.tail = p.tail[len(p.tail)-serveLogLines:]
		}
		p.mu.Unlock()
		var rec struct{ Msg, Addr string }
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "nvent serving" && rec.Addr != "" {
			select {
			case addr <- rec.Addr:
			default:
			}
		}
	}
}

func (p *serveProc) logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.tail, "\n")
}

// stop sends SIGTERM and waits up to timeout, then kills.
func (p *serveProc) stop(timeout time.Duration) error {
	select {
	case <-p.done:
		return p.err
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("did not exit within %v of SIGTERM", timeout)
	}
}

// metric reads one unlabelled sample from /metrics.
func (p *serveProc) metric(ctx context.Context, name string) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.URL+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("no sample %s", name)
}

// cpu returns the CPU time the process has used (user + system), from
// /proc/PID/stat (in clock ticks of 1/100 s, as on every Linux we run on).
func (p *serveProc) cpu() (time.Duration, error) {
	return procCPU(p.pid)
}

// procCPU reads utime + stime of pid.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces; the fields after it are
	// plain. utime and stime are fields 14 and 15.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("unreadable /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("unreadable /proc/%d/stat", pid)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("unreadable /proc/%d/stat", pid)
	}
	return time.Duration(ut+st) * 10 * time.Millisecond, nil
}

// rss returns the process's resident set size in bytes (VmRSS), from /proc.
func (p *serveProc) rss() (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) == 2 && f[1] == "kB" {
				n, err := strconv.ParseInt(f[0], 10, 64)
				return n * 1024, err
			}
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", p.pid)
}
