package postgres_test

import (
	"context"
	"encoding/json"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nvent/nvent/internal/domain"
	"github.com/nvent/nvent/internal/storage/postgres"
)

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	if d := postgres.DefaultConfig(); d.Schema != "public" || !d.AutoMigrate {
		t.Fatalf("DefaultConfig() = %+v, want schema public and migrations on", d)
	}
	ok := postgres.Config{URL: "postgres://localhost/db", Schema: "public"}
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	for name, c := range map[string]postgres.Config{
		"no URL":             {Schema: "public"},
		"no schema":          {URL: ok.URL},
		"long schema":        {URL: ok.URL, Schema: strings.Repeat("s", 64)},
		"NUL in schema":      {URL: ok.URL, Schema: "a\x00b"},
		"negative max conns": {URL: ok.URL, Schema: "public", MaxConns: -1},
	} {
		if err := c.Validate(); err == nil {
			t.Errorf("%s: Validate accepted %+v", name, c)
		}
	}
	_, _, err := postgres.NewPool(context.Background(), postgres.Config{URL: "postgres://u:secret@localhost:notaport/db"})
	if err == nil || strings.Contains(err.Error(), "secret") {
		t.Fatalf("NewPool with a bad URL = %v; want an error without the password", err)
	}
}

// TestUnreachableIsUnavailable points a store at a closed loopback port:
// every call fails quickly as unavailable, with no detail in the message.
func TestUnreachableIsUnavailable(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	cfg := postgres.Config{URL: "postgres://postgres@" + addr + "/test?sslmode=disable&connect_timeout=2", AutoMigrate: true}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	if _, _, err := postgres.Open(ctx, cfg, nil); domain.ErrorCode(err) != domain.CodeUnavailable {
		t.Fatalf("Open with migrations = %v, want unavailable", err)
	}
	pool, closePool, err := postgres.NewPool(ctx, cfg)
	if err != nil {
		t.Fatalf("NewPool connects lazily and should not fail: %v", err)
	}
	defer closePool()
	s := postgres.New(pool)
	for name, call := range map[string]func() error{
		"Append": func() error {
			_, err := s.Append(ctx, "a", []domain.NewEvent{{Type: "t"}}, domain.AppendOptions{})
			return err
		},
		"Ping": func() error { return s.Ping(ctx) },
		"Read": func() error {
			_, err := s.Read(ctx, "a", domain.ReadOptions{})
			return err
		},
		"SaveDocument": func() error {
			_, err := s.SaveDocument(ctx, "c", "d", json.RawMessage(`1`), domain.SaveOptions{})
			return err
		},
		"IncrKey": func() error {
			_, err := s.IncrKey(ctx, "k", 1)
			return err
		},
	} {
		start := time.Now()
		err := call()
		if domain.ErrorCode(err) != domain.CodeUnavailable || domain.PublicMessage(err) != "store unavailable" {
			t.Errorf("%s = %v (code %s), want unavailable with the message \"store unavailable\"", name, err, domain.ErrorCode(err))
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("%s took %v to fail", name, d)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestClosedOrCanceledIsUnavailable: a closed pool and a canceled request
// are reported as unavailable, not as internal errors.
func TestClosedOrCanceledIsUnavailable(t *testing.T) {
	t.Parallel()
	s := open(t, testConfig(t))
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := s.Append(canceled, "a", []domain.NewEvent{{Type: "t"}}, domain.AppendOptions{})
	if domain.ErrorCode(err) != domain.CodeUnavailable {
		t.Fatalf("append with a canceled context = %v, want unavailable", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	_, err = s.Append(context.Background(), "a", []domain.NewEvent{{Type: "t"}}, domain.AppendOptions{})
	if domain.ErrorCode(err) != domain.CodeUnavailable {
		t.Fatalf("append after Close = %v, want unavailable", err)
	}
}

// TestJSONRoundTripsByteForByte: data is stored as json, not jsonb, so key
// order, duplicate keys, escapes and number spelling survive.
func TestJSONRoundTripsByteForByte(t *testing.T) {
	t.Parallel()
	s := open(t, testConfig(t))
	ctx := context.Background()
	const data = `{"z":1,"a":"\u00e9\n","n":1.50,"big":123456789012345678901234567890,"a":2,"e":1E3}`
	res, err := s.Append(ctx, "json", []domain.NewEvent{{Type: "t", Data: json.RawMessage(data)}}, domain.AppendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.Read(ctx, "json", domain.ReadOptions{})
	if err != nil || len(got) != 1 || string(got[0].Data) != data || string(res.Events[0].Data) != data {
		t.Fatalf("event data read back as %+v, %v; want %s", got, err, data)
	}
	if _, err := s.SaveDocument(ctx, "c", "d", json.RawMessage(data), domain.SaveOptions{}); err != nil {
		t.Fatal(err)
	}
	if doc, err := s.GetDocument(ctx, "c", "d"); err != nil || string(doc.Data) != data {
		t.Fatalf("document data read back as %s, %v", doc.Data, err)
	}
	if _, err := s.SetKey(ctx, "k", json.RawMessage(data), 0); err != nil {
		t.Fatal(err)
	}
	if e, err := s.GetKey(ctx, "k"); err != nil || string(e.Value) != data {
		t.Fatalf("value read back as %s, %v", e.Value, err)
	}
}

// TestEventsCarryTheRelayCursor: the events of one append share one
// transaction id, and positions follow seq, for the relay that reads in
// (tx_id, position) order.
func TestEventsCarryTheRelayCursor(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	s := open(t, cfg)
	ctx := context.Background()
	evs := []domain.NewEvent{{Type: "a"}, {Type: "b"}, {Type: "c"}}
	if _, err := s.Append(ctx, "relay", evs, domain.AppendOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(ctx, "relay", evs[:1], domain.AppendOptions{}); err != nil {
		t.Fatal(err)
	}
	pool, closePool, err := postgres.NewPool(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer closePool()
	rows, err := pool.Query(ctx, `SELECT seq, tx_id::text FROM events ORDER BY tx_id, position`)
	if err != nil {
		t.Fatal(err)
	}
	var seqs []int64
	var txs []string
	for rows.Next() {
		var seq int64
		var tx string
		if err := rows.Scan(&seq, &tx); err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, seq)
		txs = append(txs, tx)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if len(seqs) != 4 || seqs[0] != 1 || seqs[1] != 2 || seqs[2] != 3 || seqs[3] != 4 {
		t.Fatalf("seqs in (tx_id, position) order = %v, want [1 2 3 4]", seqs)
	}
	if txs[0] != txs[1] || txs[1] != txs[2] || txs[2] == txs[3] {
		t.Fatalf("tx ids = %v, want one for the batch and another for the single append", txs)
	}
}

// TestSchemaNameIsQuoted runs the store in a schema whose name needs
// quoting.
func TestSchemaNameIsQuoted(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.Schema = `Odd "schema"; ` + cfg.Schema
	t.Cleanup(func() { dropSchema(t, cfg.Schema) })
	s := open(t, cfg)
	if _, err := s.Append(context.Background(), "a", []domain.NewEvent{{Type: "t"}}, domain.AppendOptions{}); err != nil {
		t.Fatalf("append in schema %q: %v", cfg.Schema, err)
	}
}
