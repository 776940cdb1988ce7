package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/nvent/nvent/internal/bus"
	"github.com/nvent/nvent/internal/domain"
	redisstore "github.com/nvent/nvent/internal/storage/redis"
)

// RedisOutbox is what the Redis relay needs of the Redis store (package
// storage/redis): its outbox stream, in the order the changes were made,
// the lease that elects one relay per store, and the checkpoint that only
// the lease holder may move.
type RedisOutbox interface {
	ReadOutbox(ctx context.Context, after string, limit int) ([]redisstore.OutboxEntry, error)
	WaitOutbox(ctx context.Context, after string, timeout time.Duration) error
	OutboxLag(ctx context.Context) (int64, time.Time, error)
	AcquireLease(ctx context.Context, owner string, ttl time.Duration) (bool, error)
	RenewLease(ctx context.Context, owner string, ttl time.Duration) (bool, error)
	ReleaseLease(ctx context.Context, owner string) error
	Checkpoint(ctx context.Context) (string, error)
	SaveCheckpoint(ctx context.Context, owner, id string) error
}

// DefaultLeaseTTL is how long a Redis relay's lease outlives its last
// renewal unless RedisConfig says otherwise.
const DefaultLeaseTTL = 5 * time.Second

// RedisConfig tunes the Redis relay: Config (its Schema is not used; the
// store's key prefix decides which outbox is relayed) and the lease.
type RedisConfig struct {
	Config
	// LeaseTTL is how long the lease lasts without renewal: the longest an
	// outbox waits for a new leader after its leader died without releasing
	// it. The leader renews it every LeaseTTL/3 and steps down when it
	// cannot. Default DefaultLeaseTTL.
	LeaseTTL time.Duration
	// Owner names this relay in the lease key's value (with a random
	// suffix), so that an operator can see who leads. Default "relay".
	Owner string
}

// Redis relays what the Redis store wrote to its outbox onto the bus, with
// the guarantee of Relay: the checkpoint moves only after the bus
// acknowledged (every handler acked), so nothing written is lost by a
// crash, and redelivered changes carry their ids. Entries are relayed in
// outbox order, which is the order the store's scripts ran: per subject,
// seq order.
//
// Every instance runs one; only the holder of the lease (a Redis key set
// with NX and PX, renewed every LeaseTTL/3) relays. A leader that stops
// releases the lease, so another takes over within LeaseRetry; one that
// dies holds it until it expires (LeaseTTL). A leader that lost its lease
// without noticing (a long pause) cannot move the checkpoint: the store
// refuses a checkpoint from anyone but the holder, so at worst a batch is
// delivered twice.
//
// The leader waits for new entries with a blocking read (XREAD BLOCK), so
// it relays a write at once, whichever instance made it.
type Redis struct {
	*core
	outbox RedisOutbox
	ttl    time.Duration
	owner  string
}

// NewRedis returns a relay over outbox; see New for b, ready and busGone.
func NewRedis(outbox RedisOutbox, b message.Publisher, cfg RedisConfig, log *slog.Logger, m Metrics, ready, busGone <-chan struct{}) *Redis {
	if cfg.LeaseTTL <= 0 {
		cfg.LeaseTTL = DefaultLeaseTTL
	}
	if cfg.Owner == "" {
		cfg.Owner = "relay"
	}
	return &Redis{
		core:   newCore(b, cfg.Config, log, m, ready, busGone),
		outbox: outbox,
		ttl:    cfg.LeaseTTL,
		owner:  cfg.Owner + "/" + domain.NewID(),
	}
}

// errLeaseLost ends a lead whose lease could not be renewed.
var errLeaseLost = errors.New("the relay lease was lost")

// Run takes part in the leader election and relays while it leads, until
// ctx ends. It returns nil on shutdown: failures (Redis down, the lease
// lost) are logged and retried.
func (r *Redis) Run(ctx context.Context) error {
	return r.elect(ctx, r.tryLead)
}

// tryLead takes the lease if it is free and relays until ctx ends, the
// lease is lost or something fails; then it releases the lease. led
// reports whether it held the lease.
func (r *Redis) tryLead(ctx context.Context) (led bool, err error) {
	got, err := r.outbox.AcquireLease(ctx, r.owner, r.ttl)
	if err != nil {
		return false, fmt.Errorf("error trying the relay lease: %w", err)
	}
	if !got {
		return false, nil
	}
	r.log.Info("relay lease taken: this instance relays", slog.String("owner", r.owner))
	r.metrics.Leading(true)
	lctx, stop := context.WithCancelCause(ctx)
	renewed := make(chan struct{})
	go func() {
		defer close(renewed)
		r.renew(lctx, stop)
	}()
	defer func() {
		stop(nil)
		<-renewed
		r.metrics.Leading(false)
		r.lagAt.Store(0)
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		if rerr := r.outbox.ReleaseLease(uctx, r.owner); rerr != nil {
			r.log.Warn("relay lease not released; it expires by itself", slog.Any("error", rerr), slog.Duration("in", r.ttl))
		}
		r.log.Info("relay lease released")
	}()
	src := &redisSource{outbox: r.outbox, owner: r.owner}
	err = r.pump(lctx, []source{src}, func(ctx context.Context) error {
		return r.outbox.WaitOutbox(ctx, src.at, r.cfg.PollInterval)
	})
	if cause := context.Cause(lctx); ctx.Err() == nil && errors.Is(cause, errLeaseLost) {
		return true, cause
	}
	return true, err
}

// renew extends the lease every ttl/3 until ctx ends. When the lease is
// someone else's, or no renewal succeeded for long enough that it may have
// expired, it ends the lead through lost.
func (r *Redis) renew(ctx context.Context, lost context.CancelCauseFunc) {
	every := r.ttl / 3
	t := time.NewTicker(every)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		held, err := r.outbox.RenewLease(ctx, r.owner, r.ttl)
		switch {
		case ctx.Err() != nil:
			return
		case err == nil && held:
			last = time.Now()
		case err == nil:
			lost(fmt.Errorf("%w: another relay holds it", errLeaseLost))
			return
		case time.Since(last) >= r.ttl-every:
			lost(fmt.Errorf("%w: not renewed for %v: %w", errLeaseLost, time.Since(last).Round(time.Millisecond), err))
			return
		default:
			r.log.Warn("relay lease not renewed; retrying", slog.Any("error", err))
		}
	}
}

// redisSource is the Redis store's outbox.
type redisSource struct {
	outbox RedisOutbox
	owner  string
	at     string // the last entry id relayed
}

func (s *redisSource) name() string { return "outbox" }

func (s *redisSource) load(ctx context.Context) (err error) {
	s.at, err = s.outbox.Checkpoint(ctx)
	return err
}

func (s *redisSource) next(ctx context.Context, limit int) ([]*message.Message, func(context.Context) (int64, error), error) {
	entries, err := s.outbox.ReadOutbox(ctx, s.at, limit)
	if err != nil || len(entries) == 0 {
		return nil, nil, err
	}
	msgs := make([]*message.Message, 0, len(entries))
	for _, e := range entries {
		msg, err := messageOf(e)
		if err != nil {
			return nil, nil, err
		}
		msgs = append(msgs, msg)
	}
	last := entries[len(entries)-1].ID
	return msgs, func(ctx context.Context) (int64, error) {
		if err := s.outbox.SaveCheckpoint(ctx, s.owner, last); err != nil {
			return 0, err
		}
		s.at = last
		return redisstore.EntryMillis(last), nil
	}, nil
}

// lag reports the entries not yet relayed (the outbox is trimmed behind the
// checkpoint) and the age of the oldest.
func (s *redisSource) lag(ctx context.Context) (int64, time.Duration, error) {
	n, oldest, err := s.outbox.OutboxLag(ctx)
	if err != nil || n == 0 {
		return 0, 0, err
	}
	return n, max(0, time.Since(oldest)), nil
}

// messageOf turns an outbox entry into the bus message of its change. An
// entry that is not a change (written behind the store's back) becomes a
// message that is not one either: its payload describes the entry, bus.Decode
// refuses it, and the router sets it aside on the poison topic, so the
// relay moves on and the entry stays visible.
func messageOf(e redisstore.OutboxEntry) (*message.Message, error) {
	if e.Err != nil {
		return message.NewMessage(e.ID, fmt.Appendf(nil, "undecodable outbox entry %s %v: %v", e.ID, e.Fields, e.Err)), nil
	}
	c := bus.Change{Kind: bus.Kind(e.Kind), ID: e.ChangeID, Event: e.Event, Document: e.Document, Collection: e.Collection,
		DocumentID: e.DocumentID, Key: e.Key, Entry: e.Entry, At: e.At, CorrelationID: e.CorrelationID}
	return c.Message()
}
