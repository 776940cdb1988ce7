package live

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nvent/nvent/internal/domain"
	"github.com/nvent/nvent/internal/stream"
)

// Reader reads a subject's events: what a session needs of the store.
type Reader interface {
	Read(ctx context.Context, subject string, opts domain.ReadOptions) ([]domain.Event, error)
}

// Config tunes delivery.
type Config struct {
	// QueueSize is how many messages a connection may have waiting; one
	// more disconnects it as a slow client. Default 256.
	QueueSize int
	// Heartbeat is how often an idle connection is pinged. Default 15s.
	Heartbeat time.Duration
	// ClientMessages says whether the client-messages channel is on; run
	// subscriptions then follow client:flow:{runId}, otherwise the
	// store-sync appends of the run's subject.
	ClientMessages bool
	// MaxSubscriptions caps the subscriptions of one connection; one more
	// is refused with too_large. Default 100.
	MaxSubscriptions int
	// MaxPatternBytes caps the topic or pattern of a subscription; a longer
	// one is refused with invalid_input. Default 512.
	MaxPatternBytes int
	// MaxPatternStars caps the '*' of a pattern; more are refused with
	// invalid_input. Default 16. (Matching is linear in the topic's length
	// whatever the pattern; this bounds the work a connection can ask of
	// every message that reaches the instance.)
	MaxPatternStars int
	// InstanceID stamps the messages made from store history.
	InstanceID string
}

// Defaults of Config.
const (
	DefaultQueueSize        = 256
	DefaultMaxSubscriptions = 100
	DefaultMaxPatternBytes  = 512
	DefaultMaxPatternStars  = 16
)

func (c *Config) setDefaults() {
	if c.QueueSize <= 0 {
		c.QueueSize = DefaultQueueSize
	}
	if c.Heartbeat <= 0 {
		c.Heartbeat = 15 * time.Second
	}
	if c.MaxSubscriptions <= 0 {
		c.MaxSubscriptions = DefaultMaxSubscriptions
	}
	if c.MaxPatternBytes <= 0 {
		c.MaxPatternBytes = DefaultMaxPatternBytes
	}
	if c.MaxPatternStars <= 0 {
		c.MaxPatternStars = DefaultMaxPatternStars
	}
}

// subscription is one pattern a connection follows.
type subscription struct {
	conn    *session
	pattern stream.Pattern
	// For a resumable subscription: the subject whose events it carries,
	// the runId it was asked by (WebSocket), and the last seq sent.
	subject string
	runID   string
	lastSeq int64
}

func (s *subscription) resumable() bool { return s.subject != "" }

// offer queues m for the connection without blocking; a full queue marks
// the connection slow.
func (s *subscription) offer(m stream.Message) {
	select {
	case s.conn.queue <- queued{s, m}:
	default:
		s.conn.markSlow()
	}
}

type queued struct {
	sub *subscription
	msg stream.Message
}

// sink writes to one client in its protocol's framing.
type sink interface {
	// history sends events a resumable subscription missed, from the store.
	history(sub *subscription, events []domain.Event) error
	// event sends one message; seq is the event's seq for a resumable
	// subscription, 0 otherwise.
	event(sub *subscription, m stream.Message, seq int64) error
}

// session is the state of one SSE or WebSocket connection. Its methods run
// on the connection's own goroutine, except offer/markSlow.
type session struct {
	hub   *Hub
	store Reader
	cfg   Config
	out   sink
	queue chan queued
	subs  []*subscription

	slowOnce sync.Once
	slow     chan struct{}
}

func newSession(h *Hub, store Reader, cfg Config, out sink) *session {
	return &session{hub: h, store: store, cfg: cfg, out: out, queue: make(chan queued, cfg.QueueSize), slow: make(chan struct{})}
}

func (s *session) markSlow() { s.slowOnce.Do(func() { close(s.slow) }) }

// close removes every subscription from the hub.
func (s *session) close() {
	for _, sub := range s.subs {
		s.hub.remove(sub)
	}
	s.subs = nil
}

// compile compiles the topic or pattern a client asks to follow, within
// the length and '*' limits.
func (c Config) compile(topic string) (stream.Pattern, error) {
	if len(topic) > c.MaxPatternBytes {
		return stream.Pattern{}, domain.Errorf(domain.CodeInvalidInput, "topic pattern is %d bytes long; the limit is %d", len(topic), c.MaxPatternBytes)
	}
	if n := strings.Count(topic, "*"); n > c.MaxPatternStars {
		return stream.Pattern{}, domain.Errorf(domain.CodeInvalidInput, "topic pattern holds %d '*'; the limit is %d", n, c.MaxPatternStars)
	}
	return stream.CompilePattern(topic)
}

// target is what a client asks to follow.
type target struct {
	topic    string // a topic or pattern
	runID    string // or a run
	afterSeq int64  // for a run, or a resumable topic: resume after this seq
}

// subjectOf returns the subject whose events a literal topic carries, or
// "" when the topic is not resumable.
func subjectOf(topic string) string {
	if strings.Contains(topic, "*") {
		return ""
	}
	if runID, ok := strings.CutPrefix(topic, "client:flow:"); ok && runID != "" {
		return domain.FlowSubject(runID)
	}
	if subject, ok := strings.CutPrefix(topic, "store-sync:append:"); ok && domain.ValidateSubject(subject) == nil {
		return subject
	}
	return ""
}

// subscribe starts following t: for a resumable target it registers the
// live listener first, then sends the history after t.afterSeq from the
// store, so that nothing falls between the two.
func (s *session) subscribe(ctx context.Context, t target) (*subscription, error) {
	if len(s.subs) >= s.cfg.MaxSubscriptions {
		return nil, domain.Errorf(domain.CodeTooLarge, "this connection holds %d subscriptions, the most it may; unsubscribe from one first", s.cfg.MaxSubscriptions)
	}
	if t.afterSeq < 0 {
		return nil, domain.Errorf(domain.CodeInvalidInput, "afterSeq must not be negative")
	}
	sub := &subscription{conn: s, lastSeq: t.afterSeq}
	topic := t.topic
	if t.runID != "" {
		if err := domain.ValidateEventID(t.runID); err != nil {
			return nil, domain.Errorf(domain.CodeInvalidInput, "bad runId: %v", err)
		}
		sub.runID, sub.subject = t.runID, domain.FlowSubject(t.runID)
		topic = "store-sync:append:" + sub.subject
		if s.cfg.ClientMessages {
			topic = "client:flow:" + t.runID
		}
	} else {
		sub.subject = subjectOf(topic)
	}
	p, err := s.cfg.compile(topic)
	if err != nil {
		return nil, err
	}
	sub.pattern = p
	s.hub.add(sub)
	s.subs = append(s.subs, sub)
	if sub.resumable() {
		if err := s.catchUp(ctx, sub, 0); err != nil {
			s.drop(sub) // a subscription that failed holds nothing
			return nil, err
		}
	}
	return sub, nil
}

// drop removes one subscription.
func (s *session) drop(sub *subscription) {
	s.hub.remove(sub)
	s.subs = slices.DeleteFunc(s.subs, func(x *subscription) bool { return x == sub })
}

// unsubscribe stops the subscriptions that match t.
func (s *session) unsubscribe(t target) {
	kept := s.subs[:0]
	for _, sub := range s.subs {
		if (t.runID != "" && sub.runID == t.runID) || (t.topic != "" && sub.runID == "" && sub.pattern.String() == t.topic) {
			s.hub.remove(sub)
			continue
		}
		kept = append(kept, sub)
	}
	s.subs = kept
}

// catchUp sends sub's events after its last seq and before before (0: all)
// from the store, as history.
func (s *session) catchUp(ctx context.Context, sub *subscription, before int64) error {
	for {
		evs, err := s.store.Read(ctx, sub.subject, domain.ReadOptions{After: sub.lastSeq, Before: before, Limit: domain.MaxReadLimit})
		if err != nil {
			return err
		}
		if len(evs) == 0 {
			return nil
		}
		if err := s.out.history(sub, evs); err != nil {
			return err
		}
		sub.lastSeq = evs[len(evs)-1].Seq
		if len(evs) < domain.MaxReadLimit {
			return nil
		}
	}
}

// deliver sends one queued live message: a resumable subscription drops
// what it already sent and fills a gap from the store first.
func (s *session) deliver(ctx context.Context, q queued) error {
	if !s.live(q.sub) {
		return nil // unsubscribed meanwhile
	}
	if !q.sub.resumable() {
		return s.out.event(q.sub, q.msg, 0)
	}
	var d struct {
		Event domain.Event `json:"event"`
	}
	if err := json.Unmarshal(q.msg.Data, &d); err != nil || d.Event.Seq == 0 {
		return nil // not an event of the subject: nothing to resume by
	}
	seq := d.Event.Seq
	if seq <= q.sub.lastSeq {
		return nil // sent already (history, or a redelivery)
	}
	if seq > q.sub.lastSeq+1 {
		if err := s.catchUp(ctx, q.sub, seq); err != nil {
			return fmt.Errorf("error filling a gap before seq %d: %w", seq, err)
		}
	}
	if err := s.out.event(q.sub, q.msg, seq); err != nil {
		return err
	}
	q.sub.lastSeq = seq
	return nil
}

func (s *session) live(sub *subscription) bool {
	for _, x := range s.subs {
		if x == sub {
			return true
		}
	}
	return false
}

// historyMessage is the stream message a stored event would have come in
// on sub's topic, for clients that read every event the same way.
func historyMessage(sub *subscription, e domain.Event, instanceID string) stream.Message {
	m := stream.Message{Topic: sub.pattern.String(), Timestamp: e.TS, InstanceID: instanceID, EventID: e.ID}
	if strings.HasPrefix(m.Topic, "client:flow:") {
		m.Type = "flow.event"
		m.Data, _ = json.Marshal(map[string]any{"runId": e.RunID, "event": e})
	} else {
		m.Type = "store.append"
		m.Data, _ = json.Marshal(map[string]any{"subject": e.Subject, "event": e})
	}
	return m
}
