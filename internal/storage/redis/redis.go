// Package redis is the storage.Store on Redis (standalone or Sentinel-managed
// primary, 6.2 or newer), through go-redis v9.
//
// # Atomicity
//
// Every write is one Lua script (EVALSHA, falling back to EVAL when Redis
// does not have it cached), so it is atomic and isolated: an append checks
// idempotency and ExpectedSeq and writes its events with gapless seqs, or
// writes nothing; a document save checks the version it expects and writes;
// a key increment reads, checks and writes. Every check happens before the
// script's first write, so a refused change leaves nothing behind; and the
// first write of a script that adds data is a command that Redis refuses at
// maxmemory (a script that has written once runs to its end), so a full
// Redis refuses such a change whole. There are no transactions across
// calls: each call is atomic on its own.
//
// # The outbox
//
// The same script that writes a change also adds it to the outbox, a Redis
// stream under {prefix}outbox (see OutboxEntry): the change and its outbox
// entry are one atomic step, so a relay that reads the outbox in stream
// order (which is the order the scripts ran) publishes every change exactly
// as it was made, and nothing committed can be missed. The relay
// (internal/relay) takes a lease, checkpoints what the bus acknowledged and
// trims the outbox behind its checkpoint; this package provides those
// operations and knows nothing of buses.
//
// # Keys
//
// Everything lives under Config.Prefix:
//
//	events:{subject}     stream: one entry per event, entry id 0-{seq}
//	ids:{subject}        hash: event id → seq (idempotency)
//	docs:{collection}    hash: document id → "version created updated data"
//	docindex:{collection} sorted set of document ids (all scores 0: id order)
//	kv:{key}             hash: v (the JSON value), x (expiry, unix ms), with PEXPIREAT
//	outbox               stream: the changes not yet relayed
//	relay:lease          the relay leader's token (SET NX PX)
//	relay:checkpoint     the id of the last outbox entry relayed
//
// Names ([A-Za-z0-9._:@-]) end their key, so no two names share a key. All
// the keys of one call are named in the script's KEYS; the keys of a call
// and the outbox are not in one hash slot, so Redis Cluster is not
// supported.
//
// # Durability
//
// A write is acknowledged when Redis has applied it in memory. Whether it
// survives a crash is Redis's persistence configuration: only AOF with
// appendfsync always loses nothing that was acknowledged; everysec can lose
// about a second, RDB snapshots everything since the last one, and a
// replica promoted after a failover what had not reached it. Redis must run
// with maxmemory-policy noeviction: an evicting policy would silently drop
// events, documents and the outbox itself.
package redis

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/nvent/nvent/internal/domain"
)

// DefaultPrefix is where the store's keys live unless Config.Prefix says
// otherwise.
const DefaultPrefix = "nvent:store:"

// Config configures the Redis store.
type Config struct {
	// URL is a go-redis URL, e.g. redis://127.0.0.1:6379/0. Required.
	URL string
	// Prefix starts every key of the store. Instances that share a store
	// share it. Default DefaultPrefix.
	Prefix string
}

func (c *Config) setDefaults() {
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
}

// Validate reports a configuration error.
func (c Config) Validate() error {
	if c.URL == "" {
		return errors.New("redis store: URL is empty")
	}
	if _, err := goredis.ParseURL(c.URL); err != nil {
		return fmt.Errorf("redis store: bad URL: %w", err)
	}
	if strings.ContainsAny(c.Prefix, " *?[]") {
		return fmt.Errorf("redis store: prefix %q holds a space or a glob character", c.Prefix)
	}
	return nil
}

// Store is the Redis adapter. It is safe for concurrent use; create it with
// New.
type Store struct {
	client  *goredis.Client
	keys    keys
	scripts scripts
	now     func() time.Time
}

// New returns a store on the Redis that cfg names. It does not connect:
// the first call does, and a Redis that is down makes calls fail as
// unavailable until it is back.
//
// Its client never retries a command by itself (a script whose reply was
// lost may have run: running it again could, for an increment, apply it
// twice); a failed call is reported as unavailable and the caller decides.
func New(cfg Config) (*Store, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	opts, _ := goredis.ParseURL(cfg.URL) // validated above
	opts.MaxRetries = -1
	opts.ContextTimeoutEnabled = true
	return &Store{client: goredis.NewClient(opts), keys: keys{prefix: cfg.Prefix}, scripts: newScripts(), now: domain.Now}, nil
}

// Provide returns a new store and its cleanup, shaped for google/wire.
func Provide(cfg Config) (*Store, func(), error) {
	s, err := New(cfg)
	if err != nil {
		return nil, nil, err
	}
	return s, func() { _ = s.Close() }, nil
}

// Ping implements storage.Store.
func (s *Store) Ping(ctx context.Context) error {
	return wrapErr(s.client.Ping(ctx).Err(), "pinging Redis")
}

// Close closes the client; later calls fail as unavailable.
func (s *Store) Close() error {
	return s.client.Close()
}

// keys names the store's Redis keys.
type keys struct{ prefix string }

func (k keys) events(subject string) string      { return k.prefix + "events:" + subject }
func (k keys) ids(subject string) string         { return k.prefix + "ids:" + subject }
func (k keys) docs(collection string) string     { return k.prefix + "docs:" + collection }
func (k keys) docIndex(collection string) string { return k.prefix + "docindex:" + collection }
func (k keys) kv(key string) string              { return k.prefix + "kv:" + key }
func (k keys) outbox() string                    { return k.prefix + "outbox" }
func (k keys) lease() string                     { return k.prefix + "relay:lease" }
func (k keys) checkpoint() string                { return k.prefix + "relay:checkpoint" }

// scripts are the store's Lua scripts, one set per Store.
type scripts struct {
	append, saveDoc, deleteDoc, listDocs    *goredis.Script
	setKey, deleteKey, incrKey              *goredis.Script
	acquire, renew, release, saveCheckpoint *goredis.Script
}

func newScripts() scripts {
	return scripts{
		append:         goredis.NewScript(luaAppend),
		saveDoc:        goredis.NewScript(luaSaveDocument),
		deleteDoc:      goredis.NewScript(luaDeleteDocument),
		listDocs:       goredis.NewScript(luaListDocuments),
		setKey:         goredis.NewScript(luaSetKey),
		deleteKey:      goredis.NewScript(luaDeleteKey),
		incrKey:        goredis.NewScript(luaIncrKey),
		acquire:        goredis.NewScript(luaAcquireLease),
		renew:          goredis.NewScript(luaRenewLease),
		release:        goredis.NewScript(luaReleaseLease),
		saveCheckpoint: goredis.NewScript(luaSaveCheckpoint),
	}
}

// wrapErr is the adapter's error boundary. It passes *domain.Error values
// through, classifies failures to reach Redis (or a Redis that turns writes
// away for now) as domain.CodeUnavailable with the message "store
// unavailable", the cause kept for the logs, and wraps anything else as
// "error <op>: <cause>", which the edges report as internal.
func wrapErr(err error, op string) error {
	if err == nil {
		return nil
	}
	var de *domain.Error
	if errors.As(err, &de) {
		return err
	}
	wrapped := fmt.Errorf("error %s: %w", op, err)
	if unavailable(err) {
		return domain.Wrap(domain.CodeUnavailable, wrapped, "store unavailable")
	}
	return wrapped
}

// unavailableReplies start the Redis error replies that say "not now"
// rather than "never": loading, busy with a script, no primary, a
// read-only replica, out of memory (under maxmemory with noeviction), no
// good replicas, failing to persist, too many clients.
var unavailableReplies = []string{"LOADING", "BUSY", "MASTERDOWN", "READONLY", "OOM", "NOREPLICAS", "MISCONF",
	"CLUSTERDOWN", "TRYAGAIN", "max number of clients"}

// unavailable reports whether err means Redis could not be reached, did not
// answer in time (or before the caller gave up), was closed, or refused the
// command for a passing reason: a retry later may succeed.
func unavailable(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) ||
		errors.Is(err, goredis.ErrClosed) || errors.Is(err, goredis.ErrPoolTimeout) || errors.Is(err, goredis.ErrPoolExhausted) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
		return true
	}
	for _, p := range unavailableReplies {
		if goredis.HasErrorPrefix(err, p) {
			return true
		}
	}
	var netErr net.Error
	return errors.As(err, &netErr)
}
