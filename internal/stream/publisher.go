package stream

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/nvent/nvent/internal/domain"
)

// Backend stores physical streams: *Memory or *Redis. One Backend value is
// shared by the publishers and subscribers of a process; Publishers and
// Subscribers built on it own their own resources (for Redis: their own
// client), so closing one never affects another.
type Backend interface {
	// Ping reports whether the backend is reachable (for readiness checks).
	Ping(ctx context.Context) error
	// Close releases the backend's own resources. Close the publishers and
	// subscribers built on it first.
	Close() error

	newWriter(layout Layout, logger watermill.LoggerAdapter) (writer, error)
	newReader(layout Layout, logger watermill.LoggerAdapter) (reader, error)
}

// writer appends wire messages (see encodeEntry) to one physical stream and
// returns once the backend has stored them.
type writer interface {
	write(stream string, wire ...*message.Message) error
	Close() error
}

// reader reads one physical stream. The returned channel delivers messages
// built by decodeEntry, one at a time: the next one comes after the previous
// one was acked; a nacked one comes again. It is closed when ctx is done or
// the subscription ends for another reason.
type reader interface {
	read(ctx context.Context, stream string, spec readSpec) (<-chan *message.Message, error)
	// Close waits for the goroutines of subscriptions whose ctx is done and
	// releases the reader's resources.
	Close() error
}

// readSpec says how to read a physical stream.
type readSpec struct {
	group    string // consumer group; "" reads every entry (broadcast)
	consumer string // this member's name within group
	oldest   bool   // start at the oldest retained entry instead of new ones
}

var errClosed = errors.New("closed")

// PublisherConfig configures a Publisher.
type PublisherConfig struct {
	// Backend is required.
	Backend Backend
	Layout  Layout
	// InstanceID is stamped on every message. Default: a random id.
	InstanceID string
}

func (c *PublisherConfig) setDefaults() {
	c.Layout.setDefaults()
	if c.InstanceID == "" {
		c.InstanceID = watermill.NewShortUUID()
	}
}

// Validate reports a configuration error.
func (c PublisherConfig) Validate() error {
	if c.Backend == nil {
		return errors.New("stream publisher: Backend is nil")
	}
	return c.Layout.Validate()
}

// Publisher is a message.Publisher that writes to the physical stream of
// each topic. Publish returns only after the backend stored every message (for
// Redis: after XADD returned), in order, and stops at the first failure.
//
// The payload of a published message becomes Data (JSON payloads as they are,
// others as a JSON string, restored byte for byte on delivery); its UUID
// becomes EventID; metadata MetadataType and MetadataTimestamp (RFC 3339;
// default: now) fill Type and Timestamp; InstanceID is always the
// publisher's. Other metadata travels along, except keys starting with
// "_nvent_".
//
// A Publisher is safe for concurrent use. Close waits for running Publish
// calls; Publish after Close fails.
type Publisher struct {
	cfg    PublisherConfig
	logger watermill.LoggerAdapter
	w      writer

	mu     sync.RWMutex
	closed bool
}

// NewPublisher builds a Publisher.
func NewPublisher(cfg PublisherConfig, logger watermill.LoggerAdapter) (*Publisher, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = watermill.NopLogger{}
	}
	w, err := cfg.Backend.newWriter(cfg.Layout, logger)
	if err != nil {
		return nil, fmt.Errorf("error creating stream publisher: %w", err)
	}
	return &Publisher{cfg: cfg, logger: logger, w: w}, nil
}

// Publish writes msgs to topic, which must be a topic, not a pattern.
func (p *Publisher) Publish(topic string, msgs ...*message.Message) error {
	stream, err := p.cfg.Layout.StreamFor(topic)
	if err != nil {
		return err
	}
	wire := make([]*message.Message, len(msgs))
	now := domain.Now()
	for i, msg := range msgs {
		if wire[i], err = encodeEntry(topic, msg, p.cfg.InstanceID, now); err != nil {
			return err
		}
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return fmt.Errorf("error publishing to %s: publisher %w", topic, errClosed)
	}
	if err := p.w.write(stream, wire...); err != nil {
		return fmt.Errorf("error publishing to %s: %w", topic, err)
	}
	return nil
}

// Close closes the publisher; it is idempotent.
func (p *Publisher) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	if err := p.w.Close(); err != nil {
		return fmt.Errorf("error closing stream publisher: %w", err)
	}
	return nil
}
