package redis

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nvent/nvent/internal/domain"
)

// A key is a hash with the JSON value under v and, when it expires, the
// expiry (unix ms) under x; the same expiry is set with PEXPIREAT, so Redis
// frees it. Reads also compare x with the store's clock, so an entry is
// gone at its expiry whichever clock is ahead.

// luaSetKey stores a value. KEYS: the key's hash, the outbox. ARGV: the
// value, the expiry (ms) or "", change id, key, now (ms), correlation id.
//
// Its first write is HSET, a command Redis refuses at maxmemory: a script
// that has written once runs to its end, so every script here writes first
// with a command that adds data, and a full Redis refuses it whole.
const luaSetKey = `
redis.call('HSET', KEYS[1], 'v', ARGV[1])
if ARGV[2] == '' then
  redis.call('HDEL', KEYS[1], 'x')
  redis.call('PERSIST', KEYS[1])
else
  redis.call('HSET', KEYS[1], 'x', ARGV[2])
  redis.call('PEXPIREAT', KEYS[1], ARGV[2])
end
redis.call('XADD', KEYS[2], '*', 'kind', 'kv.set', 'change', ARGV[3], 'key', ARGV[4], 'value', ARGV[1],
  'expires', ARGV[2], 'at', ARGV[5], 'corr', ARGV[6])
return 'ok'
`

// luaDeleteKey deletes a live key. KEYS: the key's hash, the outbox. ARGV:
// now (ms), change id, key, correlation id. It returns 0 when the key is
// absent or expired (dropping it if expired), else 1.
const luaDeleteKey = `
local cur = redis.call('HMGET', KEYS[1], 'v', 'x')
if not cur[1] then
  return 0
end
redis.call('DEL', KEYS[1])
if cur[2] and tonumber(cur[2]) <= tonumber(ARGV[1]) then
  return 0
end
redis.call('XADD', KEYS[2], '*', 'kind', 'kv.delete', 'change', ARGV[2], 'key', ARGV[3], 'at', ARGV[1], 'corr', ARGV[4])
return 1
`

// luaIncrKey adds to the integer under a key, keeping its expiry. KEYS: the
// key's hash, the outbox. ARGV: delta, now (ms), change id, key,
// correlation id. An expired entry is dropped first and counts as absent (0,
// no expiry). HINCRBY does the arithmetic on 64-bit integers (Lua numbers
// are doubles) and refuses a value that is not an integer, or an overflow:
// then the script returns {"conflict", value} having written nothing else.
// Otherwise it returns {"ok", value, expiry or ""}. JSON's -0 is an integer
// that Redis does not parse: it is 0.
const luaIncrKey = `
local cur = redis.call('HMGET', KEYS[1], 'v', 'x')
local expired = cur[1] and cur[2] and tonumber(cur[2]) <= tonumber(ARGV[2])
if expired or cur[1] == '-0' then
  redis.call('HSET', KEYS[1], 'v', '0')
end
if expired then
  redis.call('HDEL', KEYS[1], 'x')
  redis.call('PERSIST', KEYS[1])
  cur = {false, false}
end
local r = redis.pcall('HINCRBY', KEYS[1], 'v', ARGV[1])
if type(r) == 'table' and r.err then
  return {'conflict', cur[1]}
end
local v = redis.call('HGET', KEYS[1], 'v')
local x = cur[2] or ''
redis.call('XADD', KEYS[2], '*', 'kind', 'kv.set', 'change', ARGV[3], 'key', ARGV[4], 'value', v,
  'expires', x, 'at', ARGV[2], 'corr', ARGV[5])
return {'ok', v, x}
`

// GetKey implements storage.Store.
func (s *Store) GetKey(ctx context.Context, key string) (domain.KVEntry, error) {
	if err := domain.ValidateKey(key); err != nil {
		return domain.KVEntry{}, err
	}
	vals, err := s.client.HMGet(ctx, s.keys.kv(key), "v", "x").Result()
	if err != nil {
		return domain.KVEntry{}, wrapErr(err, "reading key "+key)
	}
	v, _ := vals[0].(string)
	x, _ := vals[1].(string)
	if v == "" {
		return domain.KVEntry{}, domain.Errorf(domain.CodeNotFound, "key %s not found", key)
	}
	exp, err := expiryOf(x)
	if err != nil {
		return domain.KVEntry{}, fmt.Errorf("error reading key %s: %w", key, err)
	}
	if domain.Expired(exp, s.now()) {
		return domain.KVEntry{}, domain.Errorf(domain.CodeNotFound, "key %s not found", key)
	}
	return domain.KVEntry{Key: key, Value: json.RawMessage(v), ExpiresAt: exp}, nil
}

// SetKey implements storage.Store in one script (luaSetKey), which also
// adds the change to the outbox.
func (s *Store) SetKey(ctx context.Context, key string, value json.RawMessage, ttl time.Duration) (domain.KVEntry, error) {
	now := s.now()
	v, exp, err := domain.PrepareKV(key, value, ttl, now)
	if err != nil {
		return domain.KVEntry{}, err
	}
	x := ""
	if exp != nil {
		// Redis keeps milliseconds: round up, so that a key never expires
		// before its TTL.
		ms := exp.UnixMilli()
		if exp.After(time.UnixMilli(ms)) {
			ms++
		}
		up := time.UnixMilli(ms).UTC()
		exp = &up
		x = strconv.FormatInt(ms, 10)
	}
	err = s.scripts.setKey.Run(ctx, s.client, []string{s.keys.kv(key), s.keys.outbox()},
		string(v), x, domain.NewID(), key, now.UnixMilli(), domain.CorrelationID(ctx)).Err()
	if err != nil {
		return domain.KVEntry{}, wrapErr(err, "setting key "+key)
	}
	return domain.KVEntry{Key: key, Value: v, ExpiresAt: exp}, nil
}

// DeleteKey implements storage.Store in one script (luaDeleteKey), which
// also adds the change to the outbox.
func (s *Store) DeleteKey(ctx context.Context, key string) error {
	if err := domain.ValidateKey(key); err != nil {
		return err
	}
	n, err := s.scripts.deleteKey.Run(ctx, s.client, []string{s.keys.kv(key), s.keys.outbox()},
		s.now().UnixMilli(), domain.NewID(), key, domain.CorrelationID(ctx)).Int64()
	if err != nil {
		return wrapErr(err, "deleting key "+key)
	}
	if n == 0 {
		return domain.Errorf(domain.CodeNotFound, "key %s not found", key)
	}
	return nil
}

// IncrKey implements storage.Store in one script (luaIncrKey), which also
// adds the change to the outbox.
func (s *Store) IncrKey(ctx context.Context, key string, delta int64) (domain.KVEntry, error) {
	if err := domain.ValidateKey(key); err != nil {
		return domain.KVEntry{}, err
	}
	reply, err := s.scripts.incrKey.Run(ctx, s.client, []string{s.keys.kv(key), s.keys.outbox()},
		delta, s.now().UnixMilli(), domain.NewID(), key, domain.CorrelationID(ctx)).Slice()
	if err != nil {
		return domain.KVEntry{}, wrapErr(err, "incrementing key "+key)
	}
	r := replyOf(reply)
	switch r.str(0) {
	case "conflict":
		// Redis refused the value or the sum; the domain's own check says
		// why, in the words the other adapters use.
		cur := r.optStr(1)
		if _, _, err := domain.IncrValue(key, json.RawMessage(cur), delta); err != nil {
			return domain.KVEntry{}, err
		}
		return domain.KVEntry{}, domain.Errorf(domain.CodeConflict, "key %q does not hold an integer that can be incremented by %d", key, delta)
	case "ok":
		v, x := r.str(1), r.str(2)
		exp, err := expiryOf(x)
		if r.err == nil && err == nil {
			return domain.KVEntry{Key: key, Value: json.RawMessage(v), ExpiresAt: exp}, nil
		}
	}
	return domain.KVEntry{}, fmt.Errorf("error incrementing key %s: unexpected reply %v", key, reply)
}

// expiryOf reads an expiry field: "" is none.
func expiryOf(x string) (*time.Time, error) {
	if x == "" {
		return nil, nil
	}
	ms, err := strconv.ParseInt(x, 10, 64)
	if err != nil {
		return nil, errors.New("malformed expiry " + strconv.Quote(x))
	}
	t := time.UnixMilli(ms).UTC()
	return &t, nil
}
