package stream

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill"
)

// Backend names accepted by Config.Backend.
const (
	BackendMemory = "memory"
	BackendRedis  = "redis"
	// BackendNATS is NATS JetStream (watermill-nats); needs NATSURL.
	BackendNATS = "nats"
	// BackendAMQP is RabbitMQ over AMQP 0-9-1 (watermill-amqp); needs AMQPURL.
	BackendAMQP = "amqp"
	// BackendPostgres keeps the stream in Postgres tables (watermill-sql);
	// needs PostgresURL.
	BackendPostgres = "postgres"
)

// Config is everything needed to build the stream layer of one process.
type Config struct {
	// Backend is BackendMemory (default), BackendRedis, BackendNATS,
	// BackendAMQP or BackendPostgres.
	Backend string
	// RedisURL is required for BackendRedis, e.g. redis://127.0.0.1:6379/0.
	RedisURL string
	// NATSURL is required for BackendNATS, e.g. nats://127.0.0.1:4222.
	NATSURL string
	// AMQPURL is required for BackendAMQP, e.g. amqp://guest:guest@127.0.0.1:5672/.
	AMQPURL string
	// PostgresURL is required for BackendPostgres; PostgresSchema (default
	// "public") holds its tables.
	PostgresURL    string
	PostgresSchema string
	// KeyPrefix namespaces the physical streams. Default DefaultKeyPrefix.
	KeyPrefix string
	// Channels, MaxLen and DefaultMaxLen: see Layout.
	Channels      []string
	MaxLen        map[string]int64
	DefaultMaxLen int64
	// InstanceID is stamped on every published message. Default: random.
	InstanceID string
	// Redis tuning: see RedisConfig.
	RedisBlockTime     time.Duration
	RedisClaimInterval time.Duration
	RedisMaxIdleTime   time.Duration
	// AckWait is how long a message of a competing group may stay unacked
	// with the member that received it before the broker gives it to another
	// member: NATSConfig.AckWait, PostgresConfig.AckDeadline (Redis:
	// RedisMaxIdleTime; AMQP redelivers as soon as the member's connection
	// closes). 0: the backend's default.
	AckWait time.Duration
}

func (c *Config) setDefaults() {
	if c.Backend == "" {
		c.Backend = BackendMemory
	}
	if c.InstanceID == "" {
		c.InstanceID = watermill.NewShortUUID()
	}
}

// Validate reports a configuration error.
func (c Config) Validate() error {
	urls := map[string]struct{ url, what string }{
		BackendRedis:    {c.RedisURL, "Redis"},
		BackendNATS:     {c.NATSURL, "NATS"},
		BackendAMQP:     {c.AMQPURL, "AMQP"},
		BackendPostgres: {c.PostgresURL, "Postgres"},
	}
	if u, ok := urls[c.Backend]; ok {
		if u.url == "" {
			return fmt.Errorf("stream: backend %q needs a %s URL", c.Backend, u.what)
		}
	} else if c.Backend != BackendMemory {
		return fmt.Errorf("stream: unknown backend %q (want %s, %s, %s, %s or %s)", c.Backend,
			BackendMemory, BackendRedis, BackendNATS, BackendAMQP, BackendPostgres)
	}
	if c.AckWait < 0 {
		return fmt.Errorf("stream: AckWait must not be negative")
	}
	return c.layout().Validate()
}

func (c Config) layout() Layout {
	l := Layout{KeyPrefix: c.KeyPrefix, Channels: c.Channels, MaxLen: c.MaxLen, DefaultMaxLen: c.DefaultMaxLen}
	l.setDefaults()
	return l
}

// Stream is the stream layer of one process: a backend, the layout shared by
// its publishers and subscribers, and the instance id. It builds Publishers
// and Subscribers; close those before the Stream. Two Streams in one process
// share nothing (two Memory backends never see each other; two Redis Streams
// see each other through Redis when their KeyPrefix is equal).
type Stream struct {
	backend    Backend
	layout     Layout
	instanceID string
	logger     watermill.LoggerAdapter
}

// New builds the backend named by cfg. It does not connect; use Ping.
func New(cfg Config, logger watermill.LoggerAdapter) (*Stream, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = watermill.NopLogger{}
	}
	var backend Backend
	switch cfg.Backend {
	case BackendMemory:
		backend = NewMemory(logger)
	case BackendRedis:
		r, err := NewRedis(RedisConfig{
			URL:           cfg.RedisURL,
			BlockTime:     cfg.RedisBlockTime,
			ClaimInterval: cfg.RedisClaimInterval,
			MaxIdleTime:   cfg.RedisMaxIdleTime,
		}, logger)
		if err != nil {
			return nil, err
		}
		backend = r
	case BackendNATS:
		n, err := NewNATS(NATSConfig{URL: cfg.NATSURL, AckWait: cfg.AckWait}, logger)
		if err != nil {
			return nil, err
		}
		backend = n
	case BackendAMQP:
		a, err := NewAMQP(AMQPConfig{URL: cfg.AMQPURL}, logger)
		if err != nil {
			return nil, err
		}
		backend = a
	case BackendPostgres:
		p, err := NewPostgres(PostgresConfig{URL: cfg.PostgresURL, Schema: cfg.PostgresSchema, AckDeadline: cfg.AckWait}, logger)
		if err != nil {
			return nil, err
		}
		backend = p
	}
	return NewWithBackend(backend, cfg.layout(), cfg.InstanceID, logger), nil
}

// NewWithBackend builds a Stream over an existing backend, for instance to
// simulate several processes sharing one Memory in a test. Stream.Close
// closes the backend.
func NewWithBackend(backend Backend, layout Layout, instanceID string, logger watermill.LoggerAdapter) *Stream {
	layout.setDefaults()
	if instanceID == "" {
		instanceID = watermill.NewShortUUID()
	}
	if logger == nil {
		logger = watermill.NopLogger{}
	}
	return &Stream{backend: backend, layout: layout, instanceID: instanceID, logger: logger}
}

// NewPublisher builds a Publisher of this process.
func (s *Stream) NewPublisher() (*Publisher, error) {
	return NewPublisher(PublisherConfig{Backend: s.backend, Layout: s.layout, InstanceID: s.instanceID}, s.logger)
}

// NewSubscriber builds a Subscriber of this process with the given delivery.
func (s *Stream) NewSubscriber(d Delivery) (*Subscriber, error) {
	return NewSubscriber(SubscriberConfig{Backend: s.backend, Layout: s.layout, InstanceID: s.instanceID, Delivery: d}, s.logger)
}

// InstanceID returns the id stamped on this process's messages.
func (s *Stream) InstanceID() string { return s.instanceID }

// Layout returns (a copy of) the topic → stream mapping in use.
func (s *Stream) Layout() Layout {
	l := s.layout
	l.Channels = slices.Clone(l.Channels)
	l.MaxLen = maps.Clone(l.MaxLen)
	return l
}

// Backend returns the backend.
func (s *Stream) Backend() Backend { return s.backend }

// Ping reports whether the backend is reachable.
func (s *Stream) Ping(ctx context.Context) error { return s.backend.Ping(ctx) }

// Close closes the backend.
func (s *Stream) Close() error { return s.backend.Close() }

// brokerName maps a physical stream (or group) name onto the characters a
// broker accepts in its names, deterministically and injectively: bytes for
// which keep is true stay, '_' and every other byte become "_XX" (upper-case
// hex). A result longer than maxLen keeps its first maxLen-17 bytes and adds
// "_" and 16 hex digits of the SHA-256 of the whole input.
func brokerName(s string, keep func(c byte) bool, maxLen int) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if c := s[i]; c != '_' && keep(c) {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "_%02X", c)
		}
	}
	out := b.String()
	if len(out) <= maxLen {
		return out
	}
	sum := sha256.Sum256([]byte(s))
	return out[:maxLen-17] + "_" + hex.EncodeToString(sum[:8])
}

// alnumDash reports whether c is an ASCII letter, digit or '-'.
func alnumDash(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-'
}

// groupKey is the name of a competing group on the broker: the Delivery's
// Group and the pattern, as Subscriber.Subscribe forms it.
func groupKey(group, pattern string) string { return group + "@" + pattern }
