package redis

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/nvent/nvent/internal/domain"
)

// The kinds of outbox entry, as bus.Kind spells them.
const (
	KindAppend    = "append"
	KindSave      = "save"
	KindDelete    = "delete"
	KindKeySet    = "kv.set"
	KindKeyDelete = "kv.delete"
)

// OutboxEntry is one change in the outbox, in the order the changes were
// made. Event is set for KindAppend; Document (with Collection and
// DocumentID) for KindSave; Collection and DocumentID for KindDelete; Key
// and Entry for KindKeySet; Key for KindKeyDelete.
type OutboxEntry struct {
	// ID is the outbox stream entry id ("{ms}-{n}"): the entry's position,
	// which Checkpoint and SaveCheckpoint take.
	ID string
	// Kind is one of the Kind constants.
	Kind string
	// ChangeID identifies a document or key change (a fresh id per
	// change); for an append the event id identifies it.
	ChangeID   string
	Event      *domain.Event
	Collection string
	DocumentID string
	Document   *domain.Document
	Key        string
	Entry      *domain.KVEntry
	// At is when the change was made (the event's ts for an append).
	At time.Time
	// CorrelationID is the id of the request that made the change, "" when
	// its context carried none.
	CorrelationID string
	// Err is set, and the fields above except ID are not, when the entry
	// cannot be read as a change (it was written behind the store's back).
	// Fields then holds what the entry holds.
	Err    error
	Fields map[string]any
}

// ReadOutbox returns up to limit outbox entries after the entry id after
// ("" or "0-0": from the start), oldest first. Entries that cannot be read
// as changes are returned with Err set, in their place, so that a reader
// can set them aside and move on. A limit below one is invalid input.
func (s *Store) ReadOutbox(ctx context.Context, after string, limit int) ([]OutboxEntry, error) {
	if limit < 1 {
		return nil, domain.Errorf(domain.CodeInvalidInput, "outbox limit %d must be at least 1", limit)
	}
	start := "-"
	if after != "" {
		if _, _, err := parseEntryID(after); err != nil {
			return nil, domain.Errorf(domain.CodeInvalidInput, "outbox position %q: %v", after, err)
		}
		start = "(" + after
	}
	msgs, err := s.client.XRangeN(ctx, s.keys.outbox(), start, "+", int64(limit)).Result()
	if err != nil {
		return nil, wrapErr(err, "reading the outbox")
	}
	out := make([]OutboxEntry, len(msgs))
	for i, m := range msgs {
		out[i] = decodeEntry(m)
	}
	return out, nil
}

// WaitOutbox returns once the outbox holds an entry after the entry id
// after ("": any entry), when timeout passes, or when ctx ends, whichever
// is first. It blocks in Redis (XREAD BLOCK), so it returns as soon as a
// change is written, by any instance. An error means Redis failed.
func (s *Store) WaitOutbox(ctx context.Context, after string, timeout time.Duration) error {
	if after == "" {
		after = "0-0"
	}
	err := s.client.XRead(ctx, &goredis.XReadArgs{
		Streams: []string{s.keys.outbox(), after},
		Count:   1,
		Block:   max(timeout, time.Millisecond),
	}).Err()
	if err == nil || errors.Is(err, goredis.Nil) || ctx.Err() != nil {
		return nil
	}
	return wrapErr(err, "waiting for the outbox")
}

// OutboxLag returns how many entries the outbox holds (relayed entries are
// trimmed by SaveCheckpoint, so these are the ones not yet relayed) and
// when the oldest of them was made (zero when there is none).
func (s *Store) OutboxLag(ctx context.Context) (int64, time.Time, error) {
	pipe := s.client.Pipeline()
	n := pipe.XLen(ctx, s.keys.outbox())
	first := pipe.XRangeN(ctx, s.keys.outbox(), "-", "+", 1)
	if _, err := pipe.Exec(ctx); err != nil {
		return 0, time.Time{}, wrapErr(err, "measuring the outbox")
	}
	if len(first.Val()) == 0 {
		return 0, time.Time{}, nil
	}
	e := decodeEntry(first.Val()[0])
	if e.Err != nil {
		// Its stream id says when Redis added it.
		ms, _, _ := parseEntryID(e.ID)
		e.At = time.UnixMilli(int64(ms))
	}
	return n.Val(), e.At, nil
}

// ErrLeaseLost is the error of SaveCheckpoint when the lease is not the
// caller's (any more): another relay may be relaying.
var ErrLeaseLost = domain.Errorf(domain.CodeConflict, "the relay lease is held by another relay")

// luaAcquireLease takes the lease when it is free, or extends it when it is
// already the caller's. KEYS: the lease. ARGV: owner token, ttl (ms).
const luaAcquireLease = `
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 1
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
`

// luaRenewLease extends the lease if it is still the caller's. KEYS: the
// lease. ARGV: owner token, ttl (ms).
const luaRenewLease = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
`

// luaReleaseLease frees the lease if it is the caller's. KEYS: the lease.
// ARGV: owner token.
const luaReleaseLease = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
`

// luaSaveCheckpoint stores the checkpoint and trims the outbox behind it,
// only if the caller holds the lease. KEYS: the lease, the checkpoint, the
// outbox. ARGV: owner token, the entry id, the id just after it. It trims
// first: XTRIM frees memory, so Redis runs it (and then the rest of the
// script) even at maxmemory, where SET alone would be refused.
const luaSaveCheckpoint = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('XTRIM', KEYS[3], 'MINID', ARGV[3])
redis.call('SET', KEYS[2], ARGV[2])
return 1
`

// AcquireLease makes owner the relay leader for ttl if no one is (or owner
// already is), and reports whether owner now leads. The lease is one key,
// SET NX PX: it ends ttl after its last renewal if its holder stops
// renewing it (a crash), or at once when the holder releases it.
func (s *Store) AcquireLease(ctx context.Context, owner string, ttl time.Duration) (bool, error) {
	n, err := s.scripts.acquire.Run(ctx, s.client, []string{s.keys.lease()}, owner, leaseMillis(ttl)).Int64()
	if err != nil {
		return false, wrapErr(err, "taking the relay lease")
	}
	return n == 1, nil
}

// RenewLease extends owner's lease to ttl from now and reports whether it
// is still owner's; false means it expired and someone else may hold it.
func (s *Store) RenewLease(ctx context.Context, owner string, ttl time.Duration) (bool, error) {
	n, err := s.scripts.renew.Run(ctx, s.client, []string{s.keys.lease()}, owner, leaseMillis(ttl)).Int64()
	if err != nil {
		return false, wrapErr(err, "renewing the relay lease")
	}
	return n == 1, nil
}

// ReleaseLease frees the lease if owner holds it, so that another relay can
// take it at once.
func (s *Store) ReleaseLease(ctx context.Context, owner string) error {
	return wrapErr(s.scripts.release.Run(ctx, s.client, []string{s.keys.lease()}, owner).Err(), "releasing the relay lease")
}

func leaseMillis(ttl time.Duration) int64 { return max(1, ttl.Milliseconds()) }

// Checkpoint returns the id of the last outbox entry relayed, "" when none
// was.
func (s *Store) Checkpoint(ctx context.Context) (string, error) {
	id, err := s.client.Get(ctx, s.keys.checkpoint()).Result()
	if errors.Is(err, goredis.Nil) {
		return "", nil
	}
	if err != nil {
		return "", wrapErr(err, "reading the relay checkpoint")
	}
	return id, nil
}

// SaveCheckpoint stores id as the checkpoint (every entry up to it was
// relayed) and removes those entries from the outbox, atomically, provided
// owner holds the lease: otherwise it changes nothing and returns
// ErrLeaseLost. A malformed id is invalid input.
func (s *Store) SaveCheckpoint(ctx context.Context, owner, id string) error {
	ms, n, err := parseEntryID(id)
	if err != nil {
		return domain.Errorf(domain.CodeInvalidInput, "checkpoint %q: %v", id, err)
	}
	next := fmt.Sprintf("%d-%d", ms, n+1)
	held, err := s.scripts.saveCheckpoint.Run(ctx, s.client, []string{s.keys.lease(), s.keys.checkpoint(), s.keys.outbox()},
		owner, id, next).Int64()
	if err != nil {
		return wrapErr(err, "storing the relay checkpoint")
	}
	if held != 1 {
		return ErrLeaseLost
	}
	return nil
}

// EntryMillis returns the millisecond part of an outbox entry id: when Redis
// added it, which grows with the outbox.
func EntryMillis(id string) int64 {
	ms, _, _ := parseEntryID(id)
	return int64(ms)
}

// parseEntryID splits a stream entry id "{ms}-{n}".
func parseEntryID(id string) (ms, n uint64, err error) {
	a, b, ok := strings.Cut(id, "-")
	if !ok {
		return 0, 0, errors.New("not a stream entry id {ms}-{n}")
	}
	if ms, err = strconv.ParseUint(a, 10, 64); err == nil {
		n, err = strconv.ParseUint(b, 10, 64)
	}
	if err != nil {
		return 0, 0, errors.New("not a stream entry id {ms}-{n}")
	}
	return ms, n, nil
}

// decodeEntry reads an outbox entry.
func decodeEntry(m goredis.XMessage) OutboxEntry {
	e, err := decodeChange(m)
	if err != nil {
		return OutboxEntry{ID: m.ID, Err: fmt.Errorf("outbox entry %s: %w", m.ID, err), Fields: m.Values}
	}
	return e
}

func decodeChange(m goredis.XMessage) (OutboxEntry, error) {
	get := func(name string) string { v, _ := m.Values[name].(string); return v }
	e := OutboxEntry{ID: m.ID, Kind: get("kind"), ChangeID: get("change"), CorrelationID: get("corr"),
		Collection: get("collection"), DocumentID: get("doc"), Key: get("key")}
	millis := func(name string) (time.Time, error) {
		ms, err := strconv.ParseInt(get(name), 10, 64)
		if err != nil {
			return time.Time{}, fmt.Errorf("bad %s %q", name, get(name))
		}
		return time.UnixMilli(ms).UTC(), nil
	}
	var err error
	switch e.Kind {
	case KindAppend:
		subject := get("subject")
		if err := domain.ValidateSubject(subject); err != nil {
			return e, err
		}
		seq, perr := strconv.ParseInt(get("seq"), 10, 64)
		if perr != nil || seq < 1 {
			return e, fmt.Errorf("bad seq %q", get("seq"))
		}
		ev, err := decodeEvent(subject, seq, m.Values)
		if err != nil {
			return e, err
		}
		e.Event, e.ChangeID, e.At = &ev, ev.ID, ev.TS
		return e, nil
	case KindSave:
		if err := domain.ValidateDocumentKey(e.Collection, e.DocumentID); err != nil {
			return e, err
		}
		d := domain.Document{Collection: e.Collection, ID: e.DocumentID, Data: json.RawMessage(get("data"))}
		if d.Version, err = strconv.ParseInt(get("version"), 10, 64); err != nil {
			return e, fmt.Errorf("bad version %q", get("version"))
		}
		if d.CreatedAt, err = millis("created"); err != nil {
			return e, err
		}
		if d.UpdatedAt, err = millis("at"); err != nil {
			return e, err
		}
		e.Document, e.At = &d, d.UpdatedAt
	case KindDelete:
		if err := domain.ValidateDocumentKey(e.Collection, e.DocumentID); err != nil {
			return e, err
		}
		if e.At, err = millis("at"); err != nil {
			return e, err
		}
	case KindKeySet:
		if err := domain.ValidateKey(e.Key); err != nil {
			return e, err
		}
		exp, err := expiryOf(get("expires"))
		if err != nil {
			return e, err
		}
		e.Entry = &domain.KVEntry{Key: e.Key, Value: json.RawMessage(get("value")), ExpiresAt: exp}
		if e.At, err = millis("at"); err != nil {
			return e, err
		}
	case KindKeyDelete:
		if err := domain.ValidateKey(e.Key); err != nil {
			return e, err
		}
		if e.At, err = millis("at"); err != nil {
			return e, err
		}
	default:
		return e, fmt.Errorf("unknown kind %q", e.Kind)
	}
	if e.ChangeID == "" {
		return e, errors.New("no change id")
	}
	return e, nil
}
