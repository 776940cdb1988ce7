// Package live delivers the stream to browsers: Server-Sent Events at
// /v1/subscribe and a WebSocket at /v1/ws. Each instance holds one stream
// subscription (a broadcast one, to every channel) and fans its messages
// out in process to the subscriptions of its connections.
//
// A subscription to one subject's events (a run by runId, or the literal
// topic client:flow:{runId} or store-sync:append:{subject}) is resumable:
// its events carry their seq (the SSE id), and a client that reconnects with
// the last seq it saw (Last-Event-ID, after=, afterSeq) gets exactly the
// events after it, from the store, then live ones — no gap, no duplicate, in
// seq order, whichever instance it reconnects to. The live listener is
// registered before the store is read, and live events at or below the last
// seq sent are dropped; a live event beyond the next seq makes the session
// read the missing ones from the store first. Any other pattern is live only.
//
// Every connection has a bounded queue. A client that does not keep up is
// disconnected with a reason (it resumes later without loss); it never slows
// the others or grows memory without bound.
package live

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/nvent/nvent/internal/stream"
)

// Hub fans stream messages out to the subscriptions of this instance's
// connections. Safe for concurrent use.
type Hub struct {
	sub message.Subscriber
	log *slog.Logger

	mu sync.RWMutex
	// exact holds subscriptions to a literal topic, by topic; wild holds
	// those to a pattern with '*'.
	exact map[string]map[*subscription]struct{}
	wild  map[*subscription]struct{}
}

// NewHub returns a hub fed by sub, a broadcast subscriber of the stream.
func NewHub(sub message.Subscriber, log *slog.Logger) *Hub {
	return &Hub{sub: sub, log: log, exact: map[string]map[*subscription]struct{}{}, wild: map[*subscription]struct{}{}}
}

// Run reads every channel of the stream until ctx ends.
func (h *Hub) Run(ctx context.Context) error {
	msgs, err := h.sub.Subscribe(ctx, "*")
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped while subscribing: a normal shutdown
		}
		return err
	}
	for msg := range msgs {
		m, err := stream.FromWatermill(msg)
		msg.Ack()
		if err == nil {
			err = deliverable(m)
		}
		if err != nil {
			h.log.Warn("undecodable stream message skipped", slog.String("message", msg.UUID), slog.Any("error", err))
			continue
		}
		h.fanOut(m)
	}
	return nil
}

// deliverable checks what every connection will need to send m on:
// anyone who can write to the stream can put any message there, and one
// that a connection could not encode would end every connection that
// follows its topic.
func deliverable(m stream.Message) error {
	switch {
	case m.EventID == "":
		return errors.New("the message has no event id")
	case m.Timestamp.IsZero():
		return errors.New("the message has no timestamp")
	}
	return nil
}

func (h *Hub) fanOut(m stream.Message) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	for s := range h.exact[m.Topic] {
		s.offer(m)
	}
	for s := range h.wild {
		if s.pattern.Match(m.Topic) {
			s.offer(m)
		}
	}
}

func (h *Hub) add(s *subscription) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if strings.Contains(s.pattern.String(), "*") {
		h.wild[s] = struct{}{}
		return
	}
	t := s.pattern.String()
	if h.exact[t] == nil {
		h.exact[t] = map[*subscription]struct{}{}
	}
	h.exact[t][s] = struct{}{}
}

func (h *Hub) remove(s *subscription) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.wild, s)
	t := s.pattern.String()
	delete(h.exact[t], s)
	if len(h.exact[t]) == 0 {
		delete(h.exact, t)
	}
}
