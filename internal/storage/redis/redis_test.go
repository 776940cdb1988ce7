package redis_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/nvent/nvent/internal/domain"
	"github.com/nvent/nvent/internal/storage"
	"github.com/nvent/nvent/internal/storage/redis"
	"github.com/nvent/nvent/internal/storage/storagetest"
	"github.com/nvent/nvent/internal/testenv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// open opens a store on url under prefix, closed when t ends.
func open(t *testing.T, url, prefix string) *redis.Store {
	t.Helper()
	s, cleanup, err := redis.Provide(redis.Config{URL: url, Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cleanup)
	return s
}

// fresh opens a store under a key prefix of t's own on the shared Redis;
// the keys are deleted when t ends.
func fresh(t *testing.T) (*redis.Store, *goredis.Client, string) {
	t.Helper()
	url := testenv.RedisURL(t)
	prefix := testenv.RedisPrefix(t, url)
	opts, _ := goredis.ParseURL(url)
	rc := goredis.NewClient(opts)
	t.Cleanup(func() { _ = rc.Close() })
	return open(t, url, prefix), rc, prefix
}

func TestContract(t *testing.T) {
	var mu sync.Mutex
	prefixes := map[storage.Store]string{}
	url := testenv.RedisURL(t)
	storagetest.Run(t, storagetest.Harness{
		New: func(t *testing.T) storage.Store {
			prefix := testenv.RedisPrefix(t, url)
			s := open(t, url, prefix)
			mu.Lock()
			defer mu.Unlock()
			prefixes[s] = prefix
			return s
		},
		// Reopen opens a second client on the same prefix, as a restarted
		// process would.
		Reopen: func(t *testing.T, s storage.Store) storage.Store {
			mu.Lock()
			prefix := prefixes[s]
			mu.Unlock()
			return open(t, url, prefix)
		},
	})
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func readAll(t *testing.T, s *redis.Store) []redis.OutboxEntry {
	t.Helper()
	entries, err := s.ReadOutbox(ctx(t), "", 1000)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Err != nil {
			t.Fatalf("outbox entry %s: %v", e.ID, e.Err)
		}
	}
	return entries
}

// TestEveryChangeIsInTheOutboxInOrder: each write adds its change to the
// outbox in the same step, with everything the relay needs, and a write
// that changes nothing (a duplicate, a conflict, bad input) adds nothing.
func TestEveryChangeIsInTheOutboxInOrder(t *testing.T) {
	s, _, _ := fresh(t)
	c := ctx(t)
	withCorr := domain.WithCorrelationID(c, "req-1")
	res, err := s.Append(withCorr, "nq:flow:r1", []domain.NewEvent{{ID: "e1", Type: "flow.start", FlowName: "f", Attempt: 2, Data: json.RawMessage(`{"a": "<b>"}`)}, {Type: "step.started"}}, domain.AppendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Nothing new: a retry of e1, a conflict, bad input.
	if _, err := s.Append(c, "nq:flow:r1", []domain.NewEvent{{ID: "e1", Type: "flow.start"}}, domain.AppendOptions{ExpectedSeq: new(int64)}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(c, "nq:flow:r1", []domain.NewEvent{{Type: "x"}}, domain.AppendOptions{ExpectedSeq: new(int64)}); domain.ErrorCode(err) != domain.CodeConflict {
		t.Fatalf("stale expectedSeq: %v", err)
	}
	if _, err := s.Append(c, "bad subject", []domain.NewEvent{{Type: "x"}}, domain.AppendOptions{}); domain.ErrorCode(err) != domain.CodeInvalidInput {
		t.Fatalf("bad subject: %v", err)
	}
	doc, err := s.SaveDocument(c, "users", "u1", json.RawMessage(`{"name":"Ann"}`), domain.SaveOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.SaveDocument(c, "users", "u1", json.RawMessage(`{}`), domain.SaveOptions{ExpectedVersion: new(int64)}); domain.ErrorCode(err) != domain.CodeConflict {
		t.Fatalf("stale version: %v", err)
	}
	entry, err := s.SetKey(c, "k", json.RawMessage(`41`), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.IncrKey(c, "k", 1); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteDocument(c, "users", "u1", domain.SaveOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteKey(c, "k"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteKey(c, "k"); domain.ErrorCode(err) != domain.CodeNotFound {
		t.Fatalf("second delete: %v", err)
	}

	got := readAll(t, s)
	var kinds []string
	for _, e := range got {
		kinds = append(kinds, e.Kind)
	}
	want := []string{redis.KindAppend, redis.KindAppend, redis.KindSave, redis.KindKeySet, redis.KindKeySet, redis.KindDelete, redis.KindKeyDelete}
	if !slices.Equal(kinds, want) {
		t.Fatalf("outbox holds %v, want %v", kinds, want)
	}
	for i, e := range got[:2] {
		if e.Event == nil || e.Event.ID != res.Events[i].ID || e.Event.Seq != int64(i+1) || e.Event.Subject != "nq:flow:r1" ||
			e.Event.RunID != "r1" || !e.Event.TS.Equal(res.Events[i].TS) || string(e.Event.Data) != string(res.Events[i].Data) ||
			e.ChangeID != res.Events[i].ID || e.CorrelationID != "req-1" {
			t.Fatalf("append entry %d = %+v (event %+v), want %+v with correlation id req-1", i, e, e.Event, res.Events[i])
		}
	}
	if ev := got[0].Event; ev.FlowName != "f" || ev.Attempt != 2 || string(ev.Data) != `{"a":"<b>"}` {
		t.Fatalf("append entry lost fields: %+v", ev)
	}
	if e := got[2]; e.Document == nil || e.Document.Version != 1 || string(e.Document.Data) != `{"name":"Ann"}` ||
		!e.Document.CreatedAt.Equal(doc.CreatedAt) || !e.Document.UpdatedAt.Equal(doc.UpdatedAt) || e.Collection != "users" ||
		e.DocumentID != "u1" || e.ChangeID == "" || e.CorrelationID != "" {
		t.Fatalf("save entry = %+v", e)
	}
	if e := got[3]; e.Entry == nil || string(e.Entry.Value) != "41" || !e.Entry.ExpiresAt.Equal(*entry.ExpiresAt) || e.Key != "k" {
		t.Fatalf("set entry = %+v", e)
	}
	if e := got[4]; e.Entry == nil || string(e.Entry.Value) != "42" || !e.Entry.ExpiresAt.Equal(*entry.ExpiresAt) {
		t.Fatalf("incr entry = %+v (entry %+v), want 42 with the same expiry", e, e.Entry)
	}
	if got[5].DocumentID != "u1" || got[6].Key != "k" || got[3].ChangeID == got[4].ChangeID {
		t.Fatalf("delete entries = %+v, %+v", got[5], got[6])
	}
	// Reading from a position returns what follows it.
	after, err := s.ReadOutbox(c, got[4].ID, 10)
	if err != nil || len(after) != 2 || after[0].ID != got[5].ID {
		t.Fatalf("ReadOutbox after %s = %+v, %v", got[4].ID, after, err)
	}
}

func TestKeysStayUnderThePrefix(t *testing.T) {
	s, rc, prefix := fresh(t)
	c := ctx(t)
	if _, err := s.Append(c, "a:b", []domain.NewEvent{{Type: "t"}}, domain.AppendOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SaveDocument(c, "c", "d", json.RawMessage(`1`), domain.SaveOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetKey(c, "k", json.RawMessage(`1`), 0); err != nil {
		t.Fatal(err)
	}
	keys, err := rc.Keys(c, prefix+"*").Result()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(keys)
	want := []string{prefix + "docindex:c", prefix + "docs:c", prefix + "events:a:b", prefix + "ids:a:b", prefix + "kv:k", prefix + "outbox"}
	if !slices.Equal(keys, want) {
		t.Fatalf("keys %v, want %v", keys, want)
	}
	// A store under another prefix on the same Redis sees none of it.
	other := open(t, testenv.RedisURL(t), testenv.RedisPrefix(t, testenv.RedisURL(t)))
	if evs, err := other.Read(c, "a:b", domain.ReadOptions{}); err != nil || len(evs) != 0 {
		t.Fatalf("another prefix reads %v, %v", evs, err)
	}
}

func TestIncrementOfMinusZero(t *testing.T) {
	s, _, _ := fresh(t)
	c := ctx(t)
	if _, err := s.SetKey(c, "z", json.RawMessage(`-0`), 0); err != nil {
		t.Fatal(err)
	}
	e, err := s.IncrKey(c, "z", 3)
	if err != nil || string(e.Value) != "3" {
		t.Fatalf("incr of -0 by 3 = %+v, %v; want 3 as the other adapters", e, err)
	}
}

func TestLeaseAndCheckpoint(t *testing.T) {
	s, _, _ := fresh(t)
	c := ctx(t)
	for range 3 {
		if _, err := s.Append(c, "s", []domain.NewEvent{{Type: "t"}}, domain.AppendOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	entries := readAll(t, s)
	if cp, err := s.Checkpoint(c); err != nil || cp != "" {
		t.Fatalf("checkpoint of a fresh store = %q, %v", cp, err)
	}
	if ok, err := s.AcquireLease(c, "a", time.Minute); err != nil || !ok {
		t.Fatalf("a takes a free lease: %v, %v", ok, err)
	}
	if ok, err := s.AcquireLease(c, "b", time.Minute); err != nil || ok {
		t.Fatalf("b takes a held lease: %v, %v", ok, err)
	}
	if ok, err := s.AcquireLease(c, "a", time.Minute); err != nil || !ok {
		t.Fatalf("a takes its own lease again: %v, %v", ok, err)
	}
	// Only the holder may checkpoint; the checkpoint trims what it covers.
	if err := s.SaveCheckpoint(c, "b", entries[1].ID); !errors.Is(err, redis.ErrLeaseLost) {
		t.Fatalf("b checkpoints without the lease: %v", err)
	}
	if err := s.SaveCheckpoint(c, "a", entries[1].ID); err != nil {
		t.Fatal(err)
	}
	if cp, err := s.Checkpoint(c); err != nil || cp != entries[1].ID {
		t.Fatalf("checkpoint = %q, %v; want %s", cp, err, entries[1].ID)
	}
	left := readAll(t, s)
	if len(left) != 1 || left[0].ID != entries[2].ID {
		t.Fatalf("after the checkpoint the outbox holds %+v, want only %s", left, entries[2].ID)
	}
	if n, oldest, err := s.OutboxLag(c); err != nil || n != 1 || !oldest.Equal(entries[2].At) {
		t.Fatalf("lag = %d, %v, %v; want 1 entry made at %v", n, oldest, err, entries[2].At)
	}
	if err := s.SaveCheckpoint(c, "a", "nonsense"); domain.ErrorCode(err) != domain.CodeInvalidInput {
		t.Fatalf("malformed checkpoint: %v", err)
	}
	// Renewal keeps it; release frees it for b at once.
	if ok, err := s.RenewLease(c, "b", time.Minute); err != nil || ok {
		t.Fatalf("b renews a's lease: %v, %v", ok, err)
	}
	if ok, err := s.RenewLease(c, "a", time.Minute); err != nil || !ok {
		t.Fatalf("a renews: %v, %v", ok, err)
	}
	if err := s.ReleaseLease(c, "b"); err != nil {
		t.Fatal(err)
	}
	if ok, _ := s.AcquireLease(c, "b", time.Minute); ok {
		t.Fatal("b's release freed a's lease")
	}
	if err := s.ReleaseLease(c, "a"); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.AcquireLease(c, "b", 100*time.Millisecond); err != nil || !ok {
		t.Fatalf("b after a's release: %v, %v", ok, err)
	}
	// A lease that is not renewed ends by itself: poll the clock.
	deadline := time.Now().Add(5 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, err := s.AcquireLease(c, "a", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("b's 100ms lease never expired")
		}
		<-tick.C
	}
}

func TestWaitOutboxReturnsOnAWrite(t *testing.T) {
	s, _, prefix := fresh(t)
	c := ctx(t)
	start := time.Now()
	if err := s.WaitOutbox(c, "", 100*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if time.Since(start) < 90*time.Millisecond {
		t.Fatalf("an empty outbox returned after %v, before the timeout", time.Since(start))
	}
	done := make(chan error, 1)
	go func() { done <- s.WaitOutbox(c, "", time.Minute) }()
	// Another client, as another instance would be.
	other := open(t, testenv.RedisURL(t), prefix)
	if _, err := other.SetKey(c, "k", json.RawMessage(`1`), 0); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("WaitOutbox did not return after a write")
	}
}

func TestAnEntryWrittenBehindTheStoresBackIsReturnedAsSuch(t *testing.T) {
	s, rc, prefix := fresh(t)
	c := ctx(t)
	if err := rc.XAdd(c, &goredis.XAddArgs{Stream: prefix + "outbox", Values: map[string]any{"kind": "append", "subject": "bad*"}}).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(c, "ok", []domain.NewEvent{{Type: "t"}}, domain.AppendOptions{}); err != nil {
		t.Fatal(err)
	}
	entries, err := s.ReadOutbox(c, "", 10)
	if err != nil || len(entries) != 2 {
		t.Fatalf("ReadOutbox = %+v, %v", entries, err)
	}
	if entries[0].Err == nil || entries[0].Fields["subject"] != "bad*" || entries[1].Err != nil || entries[1].Event == nil {
		t.Fatalf("entries = %+v, %+v; want the foreign one with an error, then the append", entries[0], entries[1])
	}
}

func TestRedisDownIsUnavailableAndWritesNothing(t *testing.T) {
	r := testenv.StartPrivateRedis(t)
	s := open(t, r.URL, "p:")
	c := ctx(t)
	if _, err := s.Append(c, "a", []domain.NewEvent{{ID: "one", Type: "t"}}, domain.AppendOptions{}); err != nil {
		t.Fatal(err)
	}
	r.Stop()
	calls := map[string]func() error{
		"append": func() error {
			_, err := s.Append(c, "a", []domain.NewEvent{{Type: "t"}}, domain.AppendOptions{})
			return err
		},
		"read": func() error { _, err := s.Read(c, "a", domain.ReadOptions{}); return err },
		"save": func() error {
			_, err := s.SaveDocument(c, "c", "d", json.RawMessage(`1`), domain.SaveOptions{})
			return err
		},
		"get key": func() error { _, err := s.GetKey(c, "k"); return err },
		"incr":    func() error { _, err := s.IncrKey(c, "k", 1); return err },
		"ping":    func() error { return s.Ping(c) },
	}
	for name, call := range calls {
		if err := call(); domain.ErrorCode(err) != domain.CodeUnavailable || domain.PublicMessage(err) != "store unavailable" {
			t.Errorf("%s with Redis down: %v; want unavailable", name, err)
		}
	}
	r.Start() // nothing is kept on disk: an empty Redis
	if err := s.Ping(c); err != nil {
		t.Fatalf("ping after Redis is back: %v", err)
	}
	res, err := s.Append(c, "a", []domain.NewEvent{{Type: "t"}}, domain.AppendOptions{})
	if err != nil || res.Events[0].Seq != 1 {
		t.Fatalf("append after Redis is back: %+v, %v", res, err)
	}
}

// TestScriptsSurviveAFlushedScriptCache: the store runs its scripts by
// EVALSHA and must fall back to EVAL when Redis lost them (a restart, a
// SCRIPT FLUSH, a failover to a replica).
func TestScriptsSurviveAFlushedScriptCache(t *testing.T) {
	r := testenv.StartPrivateRedis(t)
	s := open(t, r.URL, "p:")
	c := ctx(t)
	if _, err := s.Append(c, "a", []domain.NewEvent{{Type: "t"}}, domain.AppendOptions{}); err != nil {
		t.Fatal(err)
	}
	opts, _ := goredis.ParseURL(r.URL)
	rc := goredis.NewClient(opts)
	defer rc.Close()
	if err := rc.ScriptFlush(c).Err(); err != nil {
		t.Fatal(err)
	}
	res, err := s.Append(c, "a", []domain.NewEvent{{Type: "t"}}, domain.AppendOptions{})
	if err != nil || res.Events[0].Seq != 2 {
		t.Fatalf("append after SCRIPT FLUSH = %+v, %v", res, err)
	}
}

func TestBadConfig(t *testing.T) {
	for name, cfg := range map[string]redis.Config{
		"no URL":       {},
		"bad URL":      {URL: "http://x"},
		"glob prefix":  {URL: "redis://127.0.0.1:6379/0", Prefix: "a*"},
		"space prefix": {URL: "redis://127.0.0.1:6379/0", Prefix: "a b"},
	} {
		if _, err := redis.New(cfg); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// TestAFullRedisRefusesWholeWrites: at maxmemory with noeviction, Redis
// refuses a script's first write, so a write fails as unavailable and
// leaves nothing behind.
func TestAFullRedisRefusesWholeWrites(t *testing.T) {
	r := testenv.StartPrivateRedis(t)
	s := open(t, r.URL, "p:")
	c := ctx(t)
	if _, err := s.Append(c, "a", []domain.NewEvent{{Type: "t"}}, domain.AppendOptions{}); err != nil {
		t.Fatal(err)
	}
	entries := readAll(t, s)
	if ok, err := s.AcquireLease(c, "relay", time.Minute); err != nil || !ok {
		t.Fatalf("lease: %v, %v", ok, err)
	}
	opts, _ := goredis.ParseURL(r.URL)
	rc := goredis.NewClient(opts)
	defer rc.Close()
	if err := rc.ConfigSet(c, "maxmemory", "1").Err(); err != nil {
		t.Fatal(err)
	}
	_, err := s.Append(c, "a", []domain.NewEvent{{Type: "t"}, {Type: "u"}}, domain.AppendOptions{})
	if domain.ErrorCode(err) != domain.CodeUnavailable {
		t.Fatalf("append to a full Redis: %v; want unavailable", err)
	}
	if _, err := s.SetKey(c, "k", json.RawMessage(`1`), 0); domain.ErrorCode(err) != domain.CodeUnavailable {
		t.Fatalf("set on a full Redis: %v; want unavailable", err)
	}
	if n, err := rc.XLen(c, "p:outbox").Result(); err != nil || n != 1 {
		t.Fatalf("after the refused writes the outbox holds %d entries (%v), want 1", n, err)
	}
	// The relay can still checkpoint, which frees memory.
	if err := s.SaveCheckpoint(c, "relay", entries[0].ID); err != nil {
		t.Fatalf("checkpoint on a full Redis: %v", err)
	}
	if err := rc.ConfigSet(c, "maxmemory", "0").Err(); err != nil {
		t.Fatal(err)
	}
	if evs, err := s.Read(c, "a", domain.ReadOptions{}); err != nil || len(evs) != 1 {
		t.Fatalf("after the refused append the subject holds %d events (%v), want 1", len(evs), err)
	}
	if cp, err := s.Checkpoint(c); err != nil || cp != entries[0].ID {
		t.Fatalf("checkpoint = %q, %v", cp, err)
	}
}
