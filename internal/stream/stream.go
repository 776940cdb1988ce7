package stream

import (
	"context"
	"fmt"
	"maps"
	"slices"
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
	// Backend is BackendMemory (default) or BackendRedis.
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
	switch c.Backend {
	case BackendMemory:
	case BackendRedis:
		if c.RedisURL == "" {
			return fmt.Errorf("stream: backend %q needs a Redis URL", c.Backend)
		}
	default:
		return fmt.Errorf("stream: unknown backend %q (want %q or %q)", c.Backend, BackendMemory, BackendRedis)
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
