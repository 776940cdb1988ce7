package stream

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
)

// Mode is how the messages of a stream are shared among subscriptions.
type Mode int

const (
	// ModeBroadcast delivers every message to every subscription.
	ModeBroadcast Mode = iota
	// ModeCompeting delivers each message to one member of a group.
	ModeCompeting
)

func (m Mode) String() string {
	switch m {
	case ModeBroadcast:
		return "broadcast"
	case ModeCompeting:
		return "competing"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// Start is where a new subscription starts reading.
type Start int

const (
	// StartLatest delivers only messages added after Subscribe returned (for
	// ModeCompeting: after the group was created; an existing group resumes
	// where it stopped).
	StartLatest Start = iota
	// StartOldest first delivers the oldest message the stream still holds.
	StartOldest
)

// Delivery says how a Subscriber shares messages; see Broadcast and
// Competing.
type Delivery struct {
	Mode Mode
	// Group names the consumer group of ModeCompeting:
	// [A-Za-z0-9._:-]{1,200}.
	Group string
	Start Start
}

// Broadcast is the Delivery of channels that reach every instance.
func Broadcast() Delivery { return Delivery{Mode: ModeBroadcast} }

// Competing is the Delivery of work shared by the members of group.
func Competing(group string) Delivery { return Delivery{Mode: ModeCompeting, Group: group} }

var groupName = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,200}$`)

// Validate reports an invalid Delivery.
func (d Delivery) Validate() error {
	switch d.Mode {
	case ModeBroadcast:
		if d.Group != "" {
			return fmt.Errorf("stream delivery: broadcast takes no group (got %q)", d.Group)
		}
	case ModeCompeting:
		if !groupName.MatchString(d.Group) {
			return fmt.Errorf("stream delivery: group %q must match %s", d.Group, groupName)
		}
	default:
		return fmt.Errorf("stream delivery: unknown mode %d", int(d.Mode))
	}
	if d.Start != StartLatest && d.Start != StartOldest {
		return fmt.Errorf("stream delivery: unknown start %d", int(d.Start))
	}
	return nil
}

// SubscriberConfig configures a Subscriber.
type SubscriberConfig struct {
	// Backend is required.
	Backend Backend
	Layout  Layout
	// InstanceID names this process in consumer names and poison reports.
	// Default: a random id.
	InstanceID string
	// Delivery defaults to Broadcast().
	Delivery Delivery
}

func (c *SubscriberConfig) setDefaults() {
	c.Layout.setDefaults()
	if c.InstanceID == "" {
		c.InstanceID = watermill.NewShortUUID()
	}
}

// Validate reports a configuration error.
func (c SubscriberConfig) Validate() error {
	if c.Backend == nil {
		return errors.New("stream subscriber: Backend is nil")
	}
	if err := c.Layout.Validate(); err != nil {
		return err
	}
	return c.Delivery.Validate()
}

// Subscriber is a message.Subscriber over topics and patterns.
// Subscribe(ctx, p) accepts a topic or a pattern (see Pattern), reads the
// physical streams p can match (Layout.StreamsFor), and delivers the
// messages whose topic matches p; the others are acked and skipped.
//
// Messages come one at a time per physical stream: the next one after the
// previous one was acked (a nacked one comes again); order is kept within a
// physical stream, not across streams. Delivered messages carry the
// Metadata* keys and are turned back into a Message by FromWatermill.
//
// With ModeCompeting, the subscriptions of all Subscribers (in any process)
// with the same Group and the same pattern form one group: each message goes
// to one of them, at least once. A subscription that ends holding an unacked
// message passes it on (Memory: at once; Redis: once it has been idle for
// RedisConfig.MaxIdleTime). The same Group with another pattern is another
// group, so patterns never steal each other's messages.
//
// An entry that cannot be decoded is reported on the poison topic
// (Layout.PoisonTopic: "poison:{channel}") with its raw fields and the reason,
// acked, and skipped: it never stops a subscription.
//
// A Subscriber is safe for concurrent use. A subscription's channel is closed
// when its ctx is done or the Subscriber is closed; Close waits for that.
type Subscriber struct {
	cfg    SubscriberConfig
	logger watermill.LoggerAdapter
	r      reader
	poison *Publisher

	mu      sync.Mutex
	closed  bool
	closing chan struct{}
	wg      sync.WaitGroup // one per running subscription
}

// NewSubscriber builds a Subscriber.
func NewSubscriber(cfg SubscriberConfig, logger watermill.LoggerAdapter) (*Subscriber, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = watermill.NopLogger{}
	}
	r, err := cfg.Backend.newReader(cfg.Layout, logger)
	if err != nil {
		return nil, fmt.Errorf("error creating stream subscriber: %w", err)
	}
	poison, err := NewPublisher(PublisherConfig{Backend: cfg.Backend, Layout: cfg.Layout, InstanceID: cfg.InstanceID}, logger)
	if err != nil {
		_ = r.Close()
		return nil, fmt.Errorf("error creating poison publisher: %w", err)
	}
	return &Subscriber{cfg: cfg, logger: logger, r: r, poison: poison, closing: make(chan struct{})}, nil
}

// Subscribe starts a subscription to a topic or pattern. Messages added after
// Subscribe returned are delivered (and, with StartOldest, those retained
// before).
func (s *Subscriber) Subscribe(ctx context.Context, topicOrPattern string) (<-chan *message.Message, error) {
	pattern, err := CompilePattern(topicOrPattern)
	if err != nil {
		return nil, err
	}
	streams, err := s.cfg.Layout.StreamsFor(topicOrPattern)
	if err != nil {
		return nil, err
	}
	spec := readSpec{oldest: s.cfg.Delivery.Start == StartOldest}
	if s.cfg.Delivery.Mode == ModeCompeting {
		// '@' cannot occur in a group name, so group@pattern is unambiguous.
		spec.group = s.cfg.Delivery.Group + "@" + topicOrPattern
		spec.consumer = s.cfg.InstanceID + "-" + watermill.NewShortUUID()
	}

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, fmt.Errorf("error subscribing to %s: subscriber %w", topicOrPattern, errClosed)
	}
	s.wg.Add(1)
	s.mu.Unlock()

	ctx, cancel := context.WithCancel(ctx)
	chans := make([]<-chan *message.Message, len(streams))
	for i, stream := range streams {
		if chans[i], err = s.r.read(ctx, stream, spec); err != nil {
			cancel()
			s.wg.Done()
			return nil, fmt.Errorf("error subscribing to %s: %w", topicOrPattern, err)
		}
	}

	out := make(chan *message.Message)
	var forwarders sync.WaitGroup
	forwarders.Add(len(streams) + 1)
	go func() {
		defer forwarders.Done()
		select {
		case <-s.closing:
			cancel()
		case <-ctx.Done():
		}
	}()
	for i, stream := range streams {
		go func() {
			defer forwarders.Done()
			defer cancel() // one stream ending ends the subscription
			s.forward(ctx, stream, spec, pattern, chans[i], out)
		}()
	}
	go func() {
		forwarders.Wait()
		close(out)
		s.wg.Done()
	}()
	return out, nil
}

// forward passes the messages of one physical stream that match pattern to
// out. When the stream's channel closes while ctx is not done (a Redis
// consumer group vanished), it subscribes again, every second until it
// succeeds or ctx is done.
func (s *Subscriber) forward(ctx context.Context, stream string, spec readSpec, pattern Pattern, in <-chan *message.Message, out chan<- *message.Message) {
	for {
		for msg := range in {
			if reason := msg.Metadata.Get(metadataPoison); reason != "" {
				s.reportPoison(stream, msg, reason)
				msg.Ack()
				continue
			}
			if !pattern.Match(msg.Metadata.Get(MetadataTopic)) {
				msg.Ack()
				continue
			}
			select {
			case out <- msg:
			case <-ctx.Done():
				return
			}
		}
		if ctx.Err() != nil {
			return
		}
		s.logger.Info("Stream subscription ended unexpectedly, subscribing again", watermill.LogFields{"stream": stream, "pattern": pattern.String()})
		// A group that vanished is re-created at the stream's start; a
		// broadcast read resumes at its end (the store fills the gap).
		spec.oldest = spec.group != ""
		for {
			var err error
			if in, err = s.r.read(ctx, stream, spec); err == nil {
				break
			}
			if errors.Is(err, errClosed) {
				return
			}
			s.logger.Error("Error subscribing again", err, watermill.LogFields{"stream": stream})
			select {
			case <-time.After(time.Second):
			case <-ctx.Done():
				return
			}
		}
	}
}

// PoisonReport is the Data of a message on a poison topic.
type PoisonReport struct {
	Stream     string            `json:"stream"`
	Reason     string            `json:"reason"`
	Fields     map[string]string `json:"fields"`
	InstanceID string            `json:"instanceId"`
	Group      string            `json:"group,omitempty"`
}

// reportPoison publishes an undecodable entry of stream to its poison topic.
// Every subscription that reads the entry reports it; the reports share an
// EventID (a hash of stream and fields), so readers can deduplicate them.
// A report that cannot be published is logged: the entry is skipped anyway.
func (s *Subscriber) reportPoison(stream string, msg *message.Message, reason string) {
	report := PoisonReport{Stream: stream, Reason: reason, InstanceID: s.cfg.InstanceID, Group: s.cfg.Delivery.Group}
	_ = json.Unmarshal(msg.Payload, &report.Fields) // decodeEntry made it from a map[string]string
	data, _ := json.Marshal(report)
	sum := sha256.Sum256(append([]byte(stream+"\x00"), msg.Payload...))
	fields := watermill.LogFields{"stream": stream, "reason": reason}
	s.logger.Error("Undecodable stream entry, reporting it as poison", errors.New(reason), fields)
	p := NewWatermillMessage(Message{Type: "stream.poison", Data: data, EventID: "poison-" + hex.EncodeToString(sum[:16])})
	if err := s.poison.Publish(s.cfg.Layout.PoisonTopic(stream), p); err != nil {
		s.logger.Error("Error reporting poison entry", err, fields)
	}
}

// Close ends every subscription, waits for them, and releases the
// Subscriber's resources. It is idempotent.
func (s *Subscriber) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.closing)
	s.mu.Unlock()

	s.wg.Wait()
	return errors.Join(s.r.Close(), s.poison.Close())
}
