// Package testenv gives tests the real services they run against: a
// Postgres schema of their own and the Redis URL, failing with a clear
// message (never skipping) when a service is down. `make test` starts the
// services first.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
)

// DefaultPostgresURL and DefaultRedisURL are the local services the tests
// use unless NVENT_TEST_POSTGRES_URL / NVENT_TEST_REDIS_URL say otherwise.
const (
	DefaultPostgresURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	DefaultRedisURL    = "redis://127.0.0.1:6379/0"
)

// PostgresURL returns the test database URL after checking that it answers.
func PostgresURL(t testing.TB) string {
	t.Helper()
	url := os.Getenv("NVENT_TEST_POSTGRES_URL")
	if url == "" {
		url = DefaultPostgresURL
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("Postgres is not reachable at %s (set NVENT_TEST_POSTGRES_URL, or run `make services`): %v", url, err)
	}
	_ = conn.Close(ctx)
	return url
}

// Name returns a random lower-case identifier starting with prefix.
func Name(prefix string) string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// PostgresSchema creates an empty schema for this test, dropped with
// everything in it when the test ends, and returns the database URL and the
// schema name.
func PostgresSchema(t testing.TB) (url, schema string) {
	t.Helper()
	url = PostgresURL(t)
	schema = Name("t_")
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+pgx.Identifier{schema}.Sanitize()); err != nil {
		t.Fatalf("error creating schema %s: %v", schema, err)
	}
	t.Cleanup(func() {
		conn, err := pgx.Connect(context.Background(), url)
		if err != nil {
			t.Errorf("error dropping schema %s: %v", schema, err)
			return
		}
		defer conn.Close(context.Background())
		if _, err := conn.Exec(context.Background(), "DROP SCHEMA "+pgx.Identifier{schema}.Sanitize()+" CASCADE"); err != nil {
			t.Errorf("error dropping schema %s: %v", schema, err)
		}
	})
	return url, schema
}

// RedisURL returns the test Redis URL after checking that it answers.
func RedisURL(t testing.TB) string {
	t.Helper()
	url := os.Getenv("NVENT_TEST_REDIS_URL")
	if url == "" {
		url = DefaultRedisURL
	}
	opts, err := redis.ParseURL(url)
	if err != nil {
		t.Fatalf("NVENT_TEST_REDIS_URL %q: %v", url, err)
	}
	c := redis.NewClient(opts)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("Redis is not reachable at %s (set NVENT_TEST_REDIS_URL, or run `make services`): %v", url, err)
	}
	return url
}

// RedisPrefix returns a stream key prefix of this test's own ("e2e…:") and
// deletes every key under it when the test ends, so that tests share one
// Redis without seeing each other.
func RedisPrefix(t testing.TB, url string) string {
	t.Helper()
	prefix := Name("nvtest") + ":"
	t.Cleanup(func() {
		opts, err := redis.ParseURL(url)
		if err != nil {
			t.Errorf("redis url: %v", err)
			return
		}
		c := redis.NewClient(opts)
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		iter := c.Scan(ctx, 0, prefix+"*", 100).Iterator()
		for iter.Next(ctx) {
			c.Del(ctx, iter.Val())
		}
		if err := iter.Err(); err != nil {
			t.Errorf("error deleting test keys under %s: %v", prefix, err)
		}
	})
	return prefix
}

// PrivateRedis is a redis-server of the test's own, on a free loopback port,
// that the test may stop and start again (by default nothing kept on disk,
// so a restart empties it). It is stopped when the test ends.
type PrivateRedis struct {
	URL   string
	port  int
	dir   string
	extra []string
	cmd   *exec.Cmd
	t     testing.TB
}

// RedisKeepsAcknowledgedWrites are StartPrivateRedis options that make the
// server keep every write it acknowledged across a restart (AOF, fsync on
// every write), as the README advises for a stream that must lose nothing.
var RedisKeepsAcknowledgedWrites = []string{"--appendonly", "yes", "--appendfsync", "always"}

// StartPrivateRedis starts a private redis-server; extra are further
// redis-server options (they win over the defaults).
func StartPrivateRedis(t testing.TB, extra ...string) *PrivateRedis {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatalf("this test starts its own redis-server, which is not installed (apt-get install redis-server): %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()
	r := &PrivateRedis{URL: fmt.Sprintf("redis://127.0.0.1:%d/0", port), port: port, dir: t.TempDir(), extra: extra, t: t}
	r.Start()
	t.Cleanup(r.Stop)
	return r
}

// Start starts the server (again) and waits until it answers.
func (r *PrivateRedis) Start() {
	r.t.Helper()
	args := append([]string{"--bind", "127.0.0.1", "--port", strconv.Itoa(r.port),
		"--save", "", "--appendonly", "no", "--dir", r.dir}, r.extra...)
	r.cmd = exec.Command("redis-server", args...)
	if err := r.cmd.Start(); err != nil {
		r.t.Fatalf("error starting redis-server: %v", err)
	}
	opts, _ := redis.ParseURL(r.URL)
	c := redis.NewClient(opts)
	defer c.Close()
	deadline := time.After(10 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for c.Ping(context.Background()).Err() != nil {
		select {
		case <-deadline:
			r.t.Fatalf("private redis-server on port %d did not answer within 10s", r.port)
		case <-tick.C:
		}
	}
}

// Stop stops the server and waits for it to exit.
func (r *PrivateRedis) Stop() {
	if r.cmd == nil || r.cmd.Process == nil {
		return
	}
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	_ = r.cmd.Wait()
	r.cmd = nil
}
