package stream

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"
)

// Defaults of a RedisConfig.
const (
	DefaultRedisBlockTime     = time.Second
	DefaultRedisClaimInterval = 5 * time.Second
	DefaultRedisMaxIdleTime   = time.Minute
)

// RedisConfig configures the Redis Streams backend.
type RedisConfig struct {
	// URL is a go-redis URL, e.g. redis://127.0.0.1:6379/0. Required.
	URL string
	// BlockTime bounds one blocking read. It does not delay delivery (a read
	// returns as soon as an entry arrives); it only sets how often an idle
	// subscription polls. Default DefaultRedisBlockTime.
	BlockTime time.Duration
	// ClaimInterval is how often a competing subscription looks for entries
	// of its group that another member received but did not ack for
	// MaxIdleTime (a member that died), and takes them over.
	// Default DefaultRedisClaimInterval.
	ClaimInterval time.Duration
	// MaxIdleTime is how long an unacked entry stays with the member that
	// received it before another member may claim it. Handlers slower than
	// this get duplicates. Default DefaultRedisMaxIdleTime.
	MaxIdleTime time.Duration
	// NackResendSleep is the pause before a nacked message is delivered
	// again. Default 0: at once.
	NackResendSleep time.Duration
}

func (c *RedisConfig) setDefaults() {
	if c.BlockTime == 0 {
		c.BlockTime = DefaultRedisBlockTime
	}
	if c.ClaimInterval == 0 {
		c.ClaimInterval = DefaultRedisClaimInterval
	}
	if c.MaxIdleTime == 0 {
		c.MaxIdleTime = DefaultRedisMaxIdleTime
	}
}

// Validate reports a configuration error.
func (c RedisConfig) Validate() error {
	if c.URL == "" {
		return errors.New("redis stream: URL is empty")
	}
	if c.BlockTime < 0 || c.ClaimInterval < 0 || c.MaxIdleTime < 0 || c.NackResendSleep < 0 {
		return errors.New("redis stream: durations must not be negative")
	}
	return nil
}

// Redis is the Redis Streams backend, built on watermill-redisstream. It
// holds the parsed connection options and one client for Ping; every
// Publisher, every Subscriber and every subscription gets its own go-redis
// client (watermill-redisstream closes the client it was given when it is
// closed, and blocking reads each hold a connection). Redis is safe for
// concurrent use.
type Redis struct {
	cfg    RedisConfig
	opts   redis.Options
	logger watermill.LoggerAdapter
	ping   *redis.Client
}

// NewRedis parses cfg.URL; it does not connect (use Ping).
func NewRedis(cfg RedisConfig, logger watermill.LoggerAdapter) (*Redis, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = watermill.NopLogger{}
	}
	opts, err := redis.ParseURL(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("error parsing redis URL: %w", err)
	}
	r := &Redis{cfg: cfg, opts: *opts, logger: logger}
	r.ping = r.newClient()
	return r, nil
}

func (r *Redis) newClient() *redis.Client {
	opts := r.opts
	return redis.NewClient(&opts)
}

// Ping sends PING.
func (r *Redis) Ping(ctx context.Context) error {
	if err := r.ping.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("error pinging redis: %w", err)
	}
	return nil
}

// Close closes the Ping client.
func (r *Redis) Close() error {
	if err := r.ping.Close(); err != nil && !errors.Is(err, redis.ErrClosed) {
		return fmt.Errorf("error closing redis client: %w", err)
	}
	return nil
}

func (r *Redis) newWriter(layout Layout, logger watermill.LoggerAdapter) (writer, error) {
	client := r.newClient()
	p, err := redisstream.NewPublisher(redisstream.PublisherConfig{
		Client:        client,
		Marshaller:    entryMarshaller{},
		Maxlens:       layout.maxLens(),
		DefaultMaxlen: max(layout.DefaultMaxLen, 0),
	}, logger)
	if err != nil {
		return nil, fmt.Errorf("error creating redis stream publisher: %w", err)
	}
	return redisWriter{p: p, client: client, layout: layout}, nil
}

// redisWriter writes single publishes through watermill-redisstream, and
// batches (see Batch) itself, as one pipeline of XADDs with the same fields
// and trimming, since watermill-redisstream sends one XADD per round trip.
type redisWriter struct {
	p      *redisstream.Publisher
	client *redis.Client // owned by p, which closes it
	layout Layout
}

func (w redisWriter) writeBatch(entries []queuedEntry) error {
	ctx := context.Background()
	pipe := w.client.Pipeline()
	for _, e := range entries {
		fields, err := entryFields(e.wire)
		if err != nil {
			return err
		}
		args := &redis.XAddArgs{Stream: e.stream, Values: fields}
		if n := w.layout.maxLen(e.stream); n > 0 {
			args.MaxLen, args.Approx = n, true
		}
		pipe.XAdd(ctx, args)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("error writing %d entries: %w", len(entries), err)
	}
	return nil
}

func (w redisWriter) write(stream string, wire ...*message.Message) error {
	return w.p.Publish(stream, wire...)
}

func (w redisWriter) Close() error { return w.p.Close() }

func (r *Redis) newReader(_ Layout, logger watermill.LoggerAdapter) (reader, error) {
	return &redisReader{r: r, logger: logger, client: r.newClient()}, nil
}

// redisReader starts one redisstream.Subscriber per subscribed stream and
// closes it when the subscription's ctx is done.
type redisReader struct {
	r      *Redis
	logger watermill.LoggerAdapter
	client *redis.Client // for finding where a broadcast read starts
	wg     sync.WaitGroup
}

// read subscribes to stream. A broadcast read (XREAD) starts after the
// stream's current last entry, which read looks up before it returns, so that
// no entry added after read returned is missed (watermill-redisstream's "$"
// would be re-read on every poll until the first entry arrives). A group read
// (XREADGROUP) creates the group if needed, at the stream's end ("$") or, with
// spec.oldest, at its start ("0").
func (rr *redisReader) read(ctx context.Context, stream string, spec readSpec) (<-chan *message.Message, error) {
	if spec.group == "" {
		return rr.readBroadcast(ctx, stream, spec.oldest)
	}
	cfg := redisstream.SubscriberConfig{
		Client:                        rr.r.newClient(),
		Unmarshaller:                  entryMarshaller{},
		Consumer:                      spec.consumer,
		ConsumerGroup:                 spec.group,
		BlockTime:                     rr.r.cfg.BlockTime,
		ClaimInterval:                 rr.r.cfg.ClaimInterval,
		MaxIdleTime:                   rr.r.cfg.MaxIdleTime,
		NackResendSleep:               rr.r.cfg.NackResendSleep,
		DisableIndefiniteInitialBlock: true,
		ShouldStopOnReadErrors:        stopReading,
		OldestId:                      "$",
		FanOutOldestId:                "0-0",
	}
	if cfg.NackResendSleep == 0 {
		cfg.NackResendSleep = redisstream.NoSleep
	}
	if spec.oldest {
		cfg.OldestId = "0"
	}
	sub, err := redisstream.NewSubscriber(cfg, rr.logger)
	if err != nil {
		_ = cfg.Client.Close()
		return nil, fmt.Errorf("error creating redis stream subscriber: %w", err)
	}
	in, err := sub.Subscribe(ctx, stream)
	if err != nil {
		_ = sub.Close()
		return nil, fmt.Errorf("error subscribing to %s: %w", stream, err)
	}
	// Pass messages on until the subscription ends, for whatever reason,
	// then close the redisstream.Subscriber and with it its client.
	out := make(chan *message.Message)
	rr.wg.Add(1)
	go func() {
		defer rr.wg.Done()
		defer close(out)
		defer func() {
			if err := sub.Close(); err != nil && !errors.Is(err, redis.ErrClosed) {
				rr.logger.Error("Error closing redis stream subscriber", err, watermill.LogFields{"stream": stream})
			}
		}()
		for msg := range in {
			select {
			case out <- msg:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}

// broadcastCount is how many entries one XREAD of a broadcast read asks for.
const broadcastCount = 256

// readBroadcast reads stream with plain XREAD (no group): every reader gets
// every entry. It starts after the stream's current last entry, which it
// looks up before it returns, so that no entry added after it returned is
// missed (XREAD's "$" would be re-read on every poll until the first entry
// arrives); with oldest, at the oldest retained entry.
//
// It is written here rather than left to watermill-redisstream because the
// library's fan-out read asks for one entry per XREAD, a round trip per
// message per subscription; this one takes up to broadcastCount entries per
// round trip and hands them out one at a time, each after the previous one
// was acked (a nacked one again, after NackResendSleep).
func (rr *redisReader) readBroadcast(ctx context.Context, stream string, oldest bool) (<-chan *message.Message, error) {
	after := "0-0"
	if !oldest {
		last, err := rr.client.XRevRangeN(ctx, stream, "+", "-", 1).Result()
		if err != nil {
			return nil, fmt.Errorf("error reading the last entry of %s: %w", stream, err)
		}
		if len(last) > 0 {
			after = last[0].ID
		}
	}
	client := rr.r.newClient()
	out := make(chan *message.Message)
	rr.wg.Add(1)
	go func() {
		defer rr.wg.Done()
		defer close(out)
		defer func() { _ = client.Close() }()
		fields := watermill.LogFields{"stream": stream}
		for ctx.Err() == nil {
			res, err := client.XRead(ctx, &redis.XReadArgs{
				Streams: []string{stream, after}, Count: broadcastCount, Block: rr.r.cfg.BlockTime,
			}).Result()
			if errors.Is(err, redis.Nil) {
				continue // the block time passed
			}
			if err != nil {
				if ctx.Err() != nil || stopReading(err) {
					return
				}
				rr.logger.Error("Error reading redis stream, retrying", err, fields)
				if !pause(ctx, 500*time.Millisecond) {
					return
				}
				continue
			}
			for _, xs := range res {
				for _, xm := range xs.Messages {
					if !rr.deliver(ctx, out, xm) {
						return
					}
					after = xm.ID
				}
			}
		}
	}()
	return out, nil
}

// deliver hands the entry to out until it is acked; false when ctx ended.
func (rr *redisReader) deliver(ctx context.Context, out chan<- *message.Message, xm redis.XMessage) bool {
	for {
		msg := decodeEntry(xm.Values)
		mctx, cancel := context.WithCancel(ctx)
		msg.SetContext(mctx)
		select {
		case out <- msg:
		case <-ctx.Done():
			cancel()
			return false
		}
		select {
		case <-msg.Acked():
			cancel()
			return true
		case <-msg.Nacked():
			cancel()
			if !pause(ctx, rr.r.cfg.NackResendSleep) {
				return false
			}
		case <-ctx.Done():
			cancel()
			return false
		}
	}
}

// pause waits for d, or less when ctx ends first; false when it did.
func pause(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// Close waits for the subscriptions (whose ctx must be done) to end.
func (rr *redisReader) Close() error {
	rr.wg.Wait()
	if err := rr.client.Close(); err != nil && !errors.Is(err, redis.ErrClosed) {
		return fmt.Errorf("error closing redis client: %w", err)
	}
	return nil
}

// stopReading tells watermill-redisstream to end a subscription (instead of
// retrying every 500ms) when it is being closed, and when its consumer group
// is gone (NOGROUP: Redis restarted without persistence, or the group was
// destroyed) so that the Subscriber can subscribe again and re-create it.
// Other errors (Redis unreachable, …) are retried.
func stopReading(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, redis.ErrClosed) ||
		strings.HasPrefix(err.Error(), "NOGROUP")
}

// entryMarshaller maps wire messages to stream entries and back. Unmarshal
// never fails: watermill-redisstream ends the subscription on an Unmarshal
// error, so undecodable entries come out as messages marked for the poison
// topic instead (see decodeEntry).
type entryMarshaller struct{}

func (entryMarshaller) Marshal(_ string, wire *message.Message) (map[string]any, error) {
	return entryFields(wire)
}

func (entryMarshaller) Unmarshal(values map[string]any) (*message.Message, error) {
	return decodeEntry(values), nil
}
