package postgres_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"

	"github.com/nvent/nvent/internal/storage/postgres"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// urlVar names the environment variable that points the tests at Postgres.
const urlVar = "NVENT_TEST_POSTGRES_URL"

func testURL() string {
	if u := os.Getenv(urlVar); u != "" {
		return u
	}
	return "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
}

// testConfig returns a config on a fresh schema of its own, which is
// dropped when t ends. It fails t when Postgres cannot be reached.
func testConfig(t testing.TB) postgres.Config {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, testURL())
	if err != nil {
		t.Fatalf("these tests need a Postgres; set %s (now %q): %v", urlVar, testURL(), err)
	}
	if err := conn.Close(ctx); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	schema := "nvent_test_" + hex.EncodeToString(b)
	t.Cleanup(func() { dropSchema(t, schema) })
	return postgres.Config{URL: testURL(), Schema: schema, MaxConns: 4, AutoMigrate: true}
}

func dropSchema(t testing.TB, schema string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, testURL())
	if err != nil {
		t.Errorf("dropping schema %s: %v", schema, err)
		return
	}
	defer func() { _ = conn.Close(ctx) }()
	if _, err := conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE"); err != nil {
		t.Errorf("dropping schema %s: %v", schema, err)
	}
}

// open opens a store on cfg, closed when t ends.
func open(t testing.TB, cfg postgres.Config) *postgres.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, cleanup, err := postgres.Open(ctx, cfg, nil)
	if err != nil {
		t.Fatalf("opening the store on schema %s: %v", cfg.Schema, err)
	}
	t.Cleanup(cleanup)
	return s
}
