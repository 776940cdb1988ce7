// Package e2e runs nvent the way users do: the real binary, as separate
// processes talking over loopback to the real Postgres and Redis.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Build compiles ./cmd/app into dir and returns the binary's path.
func Build(dir string) (string, error) {
	bin := filepath.Join(dir, "nvent")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/nvent/nvent/cmd/app")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("error building nvent: %v\n%s", err, out)
	}
	return bin, nil
}

// Proc is a running `nvent serve`.
type Proc struct {
	URL string // http://127.0.0.1:PORT

	cmd    *exec.Cmd
	mu     sync.Mutex
	logs   bytes.Buffer
	done   chan struct{}
	err    error // set when done is closed
	killed bool  // by Kill: its exit status is expected
}

// Logs returns what the process has logged so far.
func (p *Proc) Logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.logs.String()
}

// Serve starts `bin serve` in dir with env added to the test's environment
// (NVENT_HTTP_ADDR defaults to a free loopback port), waits until it listens,
// and stops it when the test ends.
func Serve(t *testing.T, bin, dir string, env ...string) *Proc {
	t.Helper()
	cmd := exec.Command(bin, "serve")
	cmd.Dir = dir
	cmd.Env = append(append(os.Environ(), "NVENT_HTTP_ADDR=127.0.0.1:0", "NVENT_LOG_FORMAT=json"), env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &Proc{cmd: cmd, done: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		t.Fatalf("error starting nvent: %v", err)
	}
	addr := make(chan string, 1)
	go p.readLogs(stderr, addr)
	go func() { p.err = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		if err := p.Stop(10 * time.Second); err != nil {
			t.Errorf("stopping nvent: %v\n%s", err, p.Logs())
		}
	})
	select {
	case a := <-addr:
		p.URL = "http://" + a
	case <-p.done:
		t.Fatalf("nvent exited before listening: %v\n%s", p.err, p.Logs())
	case <-time.After(30 * time.Second):
		t.Fatalf("nvent did not listen within 30s\n%s", p.Logs())
	}
	return p
}

// readLogs keeps the log lines and reports the address from the
// "nvent serving" line.
func (p *Proc) readLogs(r io.Reader, addr chan<- string) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		p.mu.Lock()
		p.logs.Write(line)
		p.logs.WriteByte('\n')
		p.mu.Unlock()
		var rec struct{ Msg, Addr string }
		if json.Unmarshal(line, &rec) == nil && rec.Msg == "nvent serving" && rec.Addr != "" {
			select {
			case addr <- rec.Addr:
			default:
			}
		}
	}
}

// Stop sends SIGTERM and waits up to timeout for a clean exit.
func (p *Proc) Stop(timeout time.Duration) error {
	select {
	case <-p.done:
		return p.exitErr()
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.exitErr()
	case <-time.After(timeout):
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("did not exit within %v of SIGTERM", timeout)
	}
}

func (p *Proc) exitErr() error {
	if p.err != nil && !p.killed {
		return fmt.Errorf("exited with %v", p.err)
	}
	return nil
}

// TryDo is Do for a process that may be gone: a failed request is an error,
// not a test failure.
func (p *Proc) TryDo(method, path, body string) (int, []byte, error) {
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, p.URL+path, r)
	if err != nil {
		return 0, nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// Do sends a request with a JSON body (none when body is "") and returns the
// status and the response body.
func (p *Proc) Do(t *testing.T, method, path, body string) (int, []byte) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, p.URL+path, r)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// Run runs `bin args…` in dir with env added and returns what it printed
// (stdout, then stderr); it
// fails the test unless the command exits with wantCode.
func Run(t *testing.T, bin, dir string, wantCode int, env []string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("nvent %v: %v", args, err)
	}
	if code != wantCode {
		t.Fatalf("nvent %v exited %d, want %d\nstdout: %s\nstderr: %s", args, code, wantCode, stdout.String(), stderr.String())
	}
	return stdout.String() + stderr.String()
}

// Tail runs `bin tail pattern` in dir with env added and returns the stream
// messages it prints, decoded, once it has subscribed. It is stopped when
// the test ends.
func Tail(t *testing.T, bin, dir, pattern string, env ...string) <-chan map[string]any {
	t.Helper()
	cmd := exec.Command(bin, "tail", pattern)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("error starting nvent tail: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	})
	subscribed := make(chan struct{})
	var logs bytes.Buffer
	var mu sync.Mutex
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			mu.Lock()
			logs.WriteString(sc.Text() + "\n")
			mu.Unlock()
			if strings.HasPrefix(sc.Text(), "tailing ") {
				close(subscribed)
			}
		}
	}()
	out := make(chan map[string]any, 10_000)
	go func() {
		defer close(out)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64*1024), 1<<20)
		for sc.Scan() {
			var m map[string]any
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				m = map[string]any{"undecodable": sc.Text()}
			}
			out <- m
		}
	}()
	select {
	case <-subscribed:
	case <-time.After(30 * time.Second):
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("nvent tail did not subscribe within 30s:\n%s", logs.String())
	}
	return out
}

// Metric returns the value of the sample `name{labels}` (labels as written
// in the exposition, such as `wiring="flow-runs"`; empty for none) on p's
// /metrics, or 0 when it is absent.
func (p *Proc) Metric(t *testing.T, name, labels string) float64 {
	t.Helper()
	status, body := p.Do(t, "GET", "/metrics", "")
	if status != 200 {
		t.Fatalf("/metrics: %d", status)
	}
	want := name
	if labels != "" {
		want += "{" + labels + "}"
	}
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, want+" "); ok {
			var f float64
			if _, err := fmt.Sscan(v, &f); err != nil {
				t.Fatalf("metric line %q: %v", line, err)
			}
			return f
		}
	}
	return 0
}

// Eventually polls cond every 50ms until it holds, failing the test with
// msg() after within.
func Eventually(t *testing.T, within time.Duration, cond func() bool, msg func() string) {
	t.Helper()
	deadline := time.Now().Add(within)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", within, msg())
		}
		<-tick.C
	}
}

// Kill ends the process with SIGKILL, as a crash would, and waits for it.
func (p *Proc) Kill() {
	p.killed = true
	_ = p.cmd.Process.Kill()
	<-p.done
}
