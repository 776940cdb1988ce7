// Package streamtest helps tests that need the shared Redis: it finds it,
// fails clearly when it is not there, and isolates each test under a key
// prefix of its own that is deleted when the test ends. It never flushes a
// database.
package streamtest

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/redis/go-redis/v9"
)

// DefaultRedisURL is used when NVENT_TEST_REDIS_URL is not set.
const DefaultRedisURL = "redis://127.0.0.1:6379/0"

// RedisURL returns NVENT_TEST_REDIS_URL (default DefaultRedisURL) after
// checking that Redis answers PING; the test fails, and stops, if it does not.
func RedisURL(t testing.TB) string {
	t.Helper()
	url := os.Getenv("NVENT_TEST_REDIS_URL")
	if url == "" {
		url = DefaultRedisURL
	}
	client := newClient(t, url)
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := client.Ping(ctx).Err(); err != nil {
		t.Fatalf("Redis at %s is unreachable (%v): these tests need a running Redis; start one or set NVENT_TEST_REDIS_URL", url, err)
	}
	return url
}

// KeyPrefix returns a fresh key prefix ("nvent-test-{random}:") and deletes
// every key under it when the test and its cleanups registered later end.
func KeyPrefix(t testing.TB, redisURL string) string {
	t.Helper()
	prefix := "nvent-test-" + watermill.NewShortUUID() + ":"
	t.Cleanup(func() {
		client := newClient(t, redisURL)
		defer client.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		iter := client.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		for iter.Next(ctx) {
			if err := client.Del(ctx, iter.Val()).Err(); err != nil {
				t.Errorf("error deleting test key %s: %v", iter.Val(), err)
			}
		}
		if err := iter.Err(); err != nil {
			t.Errorf("error listing test keys under %s: %v", prefix, err)
		}
	})
	return prefix
}

func newClient(t testing.TB, url string) *redis.Client {
	t.Helper()
	opts, err := redis.ParseURL(url)
	if err != nil {
		t.Fatalf("invalid Redis URL %q: %v", url, err)
	}
	return redis.NewClient(opts)
}
