package app_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/nvent/nvent/internal/app"
)

// idle is a consumer with nothing to consume: the server may serve at once.
type idle struct{ running chan struct{} }

func (c idle) Run(ctx context.Context) error { <-ctx.Done(); return nil }
func (c idle) Running() chan struct{}        { return c.running }

// serve runs an App with cfg on a free loopback port until the test ends
// and returns its address.
func serve(t *testing.T, h http.Handler, cfg app.HTTPConfig) string {
	t.Helper()
	running := make(chan struct{})
	close(running)
	a := app.New("127.0.0.1:0", h, slog.New(slog.DiscardHandler), 5*time.Second, idle{running})
	a.SetHTTP(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	addr := make(chan string, 1)
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx, func(a net.Addr) { addr <- a.String() }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	select {
	case s := <-addr:
		return s
	case err := <-done:
		t.Fatalf("Run ended before serving: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the server did not start within 10s")
	}
	return ""
}

// dropped waits for the server to close c, failing if it has not within
// limit (a read of ours that times out means the server kept it open).
func dropped(t *testing.T, c net.Conn, limit time.Duration) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(limit))
	_, err := io.Copy(io.Discard, c)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the server kept a connection open for %v", limit)
	}
}

var ok = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") })

func TestAClientThatSendsNothingIsDropped(t *testing.T) {
	addr := serve(t, ok, app.HTTPConfig{ReadHeaderTimeout: 200 * time.Millisecond, IdleTimeout: time.Minute})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	dropped(t, c, 10*time.Second)
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Fatalf("dropped after %v, before the header timeout", d)
	}
}

func TestASlowLorisClientIsDropped(t *testing.T) {
	addr := serve(t, ok, app.HTTPConfig{ReadHeaderTimeout: 300 * time.Millisecond, IdleTimeout: time.Minute})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// One header byte every 50 ms: never a whole request within 300 ms.
	start := time.Now()
	req := "GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + strings.Repeat("a", 200)
	for i := 0; i < len(req); i++ {
		if _, err := c.Write([]byte{req[i]}); err != nil {
			break // the server closed it
		}
		if time.Since(start) > 10*time.Second {
			t.Fatal("the server accepted header bytes for 10s")
		}
		tick := time.NewTimer(50 * time.Millisecond)
		<-tick.C
	}
	dropped(t, c, 10*time.Second)
}

func TestAnIdleKeepAliveConnectionIsClosed(t *testing.T) {
	addr := serve(t, ok, app.HTTPConfig{ReadHeaderTimeout: time.Minute, IdleTimeout: 200 * time.Millisecond})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("first request: %v %v", resp, err)
	}
	resp.Body.Close()
	dropped(t, c, 10*time.Second)
}

func TestOversizedHeadersAreRefused(t *testing.T) {
	addr := serve(t, ok, app.HTTPConfig{MaxHeaderBytes: 8 << 10})
	for _, tc := range []struct {
		size int
		want int
	}{{4 << 10, 200}, {64 << 10, 431}} {
		req, _ := http.NewRequest("GET", "http://"+addr+"/", nil)
		req.Header.Set("X-Big", strings.Repeat("a", tc.size))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("a %d-byte header: %d, want %d", tc.size, resp.StatusCode, tc.want)
		}
	}
}

// TestManySilentConnectionsLeaveNothingBehind opens hundreds of
// connections that send nothing: each is dropped after the header timeout,
// and the server's goroutines and heap come back to where they were.
func TestManySilentConnectionsLeaveNothingBehind(t *testing.T) {
	const n = 300
	addr := serve(t, ok, app.HTTPConfig{ReadHeaderTimeout: 300 * time.Millisecond})
	heap := func() (uint64, int) {
		runtime.GC()
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc, runtime.NumGoroutine()
	}
	baseHeap, baseG := heap()
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	for _, c := range conns {
		dropped(t, c, 10*time.Second)
		c.Close()
	}
	conns = nil
	// The server's connection goroutines end right after they close.
	deadline := time.Now().Add(10 * time.Second)
	h, g := heap()
	for g > baseG && time.Now().Before(deadline) {
		wait := time.NewTimer(10 * time.Millisecond)
		<-wait.C
		h, g = heap()
	}
	t.Logf("%d silent connections: goroutines %d → %d, heap %d KiB → %d KiB", n, baseG, g, baseHeap>>10, h>>10)
	if g > baseG {
		t.Fatalf("%d goroutines remain of %d silent connections", g-baseG, n)
	}
	if int64(h)-int64(baseHeap) > 1<<20 {
		t.Fatalf("the heap stayed %d KiB above where it started", (int64(h)-int64(baseHeap))>>10)
	}
}
