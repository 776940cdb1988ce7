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

// A document is stored as one field of its collection's hash, with the
// value "{version} {createdAt ms} {updatedAt ms} {data}", and its id in the
// collection's index (a sorted set whose scores are all 0, so that
// ZRANGEBYLEX pages through it in id order).

// luaSaveDocument creates or replaces a document. KEYS: the collection's
// hash, its index, the outbox. ARGV: id, the expected version or "", data,
// now (ms), collection, change id, correlation id. It returns
// {"conflict", version} having written nothing when the expected version
// does not match, else {"ok", version, createdAt}.
const luaSaveDocument = `
local cur = redis.call('HGET', KEYS[1], ARGV[1])
local version, created = 0, ARGV[4]
if cur then
  local v, c = string.match(cur, '^(%d+) (%d+) ')
  version, created = tonumber(v), c
end
if ARGV[2] ~= '' and tonumber(ARGV[2]) ~= version then
  return {'conflict', version}
end
version = version + 1
redis.call('HSET', KEYS[1], ARGV[1], version .. ' ' .. created .. ' ' .. ARGV[4] .. ' ' .. ARGV[3])
redis.call('ZADD', KEYS[2], 0, ARGV[1])
redis.call('XADD', KEYS[3], '*', 'kind', 'save', 'change', ARGV[6], 'collection', ARGV[5], 'doc', ARGV[1],
  'version', version, 'created', created, 'at', ARGV[4], 'data', ARGV[3], 'corr', ARGV[7])
return {'ok', version, created}
`

// luaDeleteDocument deletes a document. KEYS: the collection's hash, its
// index, the outbox. ARGV: id, the expected version or "", collection,
// change id, correlation id, now (ms). It returns {"notfound"} or
// {"conflict", version} having written nothing, else {"ok"}.
const luaDeleteDocument = `
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then
  return {'notfound'}
end
local version = tonumber(string.match(cur, '^(%d+) '))
if ARGV[2] ~= '' and tonumber(ARGV[2]) ~= version then
  return {'conflict', version}
end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('XADD', KEYS[3], '*', 'kind', 'delete', 'change', ARGV[4], 'collection', ARGV[3], 'doc', ARGV[1],
  'at', ARGV[6], 'corr', ARGV[5])
return {'ok'}
`

// luaListDocuments reads one page of a collection, atomically. KEYS: the
// index, the hash. ARGV: the cursor (the last id of the previous page, or
// ""), how many to read. It returns {id1, value1, id2, value2, …} in id
// order.
const luaListDocuments = `
local min = '-'
if ARGV[1] ~= '' then
  min = '(' .. ARGV[1]
end
local ids = redis.call('ZRANGEBYLEX', KEYS[1], min, '+', 'LIMIT', 0, tonumber(ARGV[2]))
if #ids == 0 then
  return {}
end
local values = redis.call('HMGET', KEYS[2], unpack(ids))
local out = {}
for i = 1, #ids do
  out[#out + 1] = ids[i]
  out[#out + 1] = values[i]
end
return out
`

// SaveDocument implements storage.Store in one script (luaSaveDocument),
// which also adds the change to the outbox.
func (s *Store) SaveDocument(ctx context.Context, collection, id string, data json.RawMessage, opts domain.SaveOptions) (domain.Document, error) {
	data, err := domain.PrepareDocument(collection, id, data, opts)
	if err != nil {
		return domain.Document{}, err
	}
	now := s.now()
	keys := []string{s.keys.docs(collection), s.keys.docIndex(collection), s.keys.outbox()}
	reply, err := s.scripts.saveDoc.Run(ctx, s.client, keys,
		id, expectedArg(opts), string(data), now.UnixMilli(), collection, domain.NewID(), domain.CorrelationID(ctx)).Slice()
	if err != nil {
		return domain.Document{}, wrapErr(err, "saving document "+collection+"/"+id)
	}
	r := replyOf(reply)
	status, version := r.str(0), r.int(1)
	if status == "conflict" {
		return domain.Document{}, domain.CheckVersion(collection, id, version, opts)
	}
	created, err := strconv.ParseInt(r.str(2), 10, 64)
	if r.err != nil || err != nil || status != "ok" {
		return domain.Document{}, fmt.Errorf("error saving document %s/%s: unexpected reply %v", collection, id, reply)
	}
	return domain.Document{Collection: collection, ID: id, Version: version, Data: data,
		CreatedAt: time.UnixMilli(created).UTC(), UpdatedAt: now}, nil
}

// expectedArg is the expected-version ARGV of opts: "" when unset.
func expectedArg(opts domain.SaveOptions) string {
	if opts.ExpectedVersion == nil {
		return ""
	}
	return strconv.FormatInt(*opts.ExpectedVersion, 10)
}

// GetDocument implements storage.Store.
func (s *Store) GetDocument(ctx context.Context, collection, id string) (domain.Document, error) {
	if err := domain.ValidateDocumentKey(collection, id); err != nil {
		return domain.Document{}, err
	}
	v, err := s.client.HGet(ctx, s.keys.docs(collection), id).Result()
	if errors.Is(err, goredis.Nil) {
		return domain.Document{}, domain.Errorf(domain.CodeNotFound, "document %s/%s not found", collection, id)
	}
	if err != nil {
		return domain.Document{}, wrapErr(err, "reading document "+collection+"/"+id)
	}
	return decodeDocument(collection, id, v)
}

// DeleteDocument implements storage.Store in one script
// (luaDeleteDocument), which also adds the change to the outbox.
func (s *Store) DeleteDocument(ctx context.Context, collection, id string, opts domain.SaveOptions) error {
	if err := domain.ValidateDocumentKey(collection, id); err != nil {
		return err
	}
	keys := []string{s.keys.docs(collection), s.keys.docIndex(collection), s.keys.outbox()}
	reply, err := s.scripts.deleteDoc.Run(ctx, s.client, keys,
		id, expectedArg(opts), collection, domain.NewID(), domain.CorrelationID(ctx), s.now().UnixMilli()).Slice()
	if err != nil {
		return wrapErr(err, "deleting document "+collection+"/"+id)
	}
	r := replyOf(reply)
	switch r.str(0) {
	case "ok":
		return nil
	case "notfound":
		return domain.Errorf(domain.CodeNotFound, "document %s/%s not found", collection, id)
	case "conflict":
		if v := r.int(1); r.err == nil {
			return domain.CheckVersion(collection, id, v, opts)
		}
	}
	return fmt.Errorf("error deleting document %s/%s: unexpected reply %v", collection, id, reply)
}

// ListDocuments implements storage.Store: one script (luaListDocuments)
// reads a consistent page.
func (s *Store) ListDocuments(ctx context.Context, collection string, opts domain.ListOptions) (domain.DocumentPage, error) {
	if err := domain.ValidateCollection(collection); err != nil {
		return domain.DocumentPage{}, err
	}
	opts, err := opts.Normalize()
	if err != nil {
		return domain.DocumentPage{}, err
	}
	keys := []string{s.keys.docIndex(collection), s.keys.docs(collection)}
	reply, err := s.scripts.listDocs.Run(ctx, s.client, keys, opts.After, opts.Limit+1).Slice()
	if err != nil {
		return domain.DocumentPage{}, wrapErr(err, "listing collection "+collection)
	}
	r := replyOf(reply)
	docs := make([]domain.Document, 0, len(reply)/2)
	for i := 0; i+1 < len(reply); i += 2 {
		id, v := r.str(i), r.optStr(i+1)
		if r.err != nil || v == "" {
			return domain.DocumentPage{}, fmt.Errorf("error listing collection %s: document %q is indexed but not stored", collection, id)
		}
		d, err := decodeDocument(collection, id, v)
		if err != nil {
			return domain.DocumentPage{}, err
		}
		docs = append(docs, d)
	}
	return domain.PageOf(docs, opts.Limit), nil
}

// decodeDocument reads a document's hash value.
func decodeDocument(collection, id, v string) (domain.Document, error) {
	parts := strings.SplitN(v, " ", 4)
	bad := func() (domain.Document, error) {
		return domain.Document{}, fmt.Errorf("error reading document %s/%s: malformed value %q", collection, id, truncate(v))
	}
	if len(parts) != 4 {
		return bad()
	}
	var n [3]int64
	for i := range n {
		var err error
		if n[i], err = strconv.ParseInt(parts[i], 10, 64); err != nil {
			return bad()
		}
	}
	return domain.Document{Collection: collection, ID: id, Version: n[0], Data: json.RawMessage(parts[3]),
		CreatedAt: time.UnixMilli(n[1]).UTC(), UpdatedAt: time.UnixMilli(n[2]).UTC()}, nil
}

// truncate shortens s for an error message.
func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
