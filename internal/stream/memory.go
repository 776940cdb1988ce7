package stream

import (
	"context"
	"fmt"
	"sync"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
)

// Memory is the in-process backend: for each physical stream, a log of
// entries trimmed like a Redis stream, read the way Redis streams are read.
// A broadcast reader keeps its own position; the members of a consumer group
// share the group's position, so each entry goes to one member, and an entry
// that a member leaves without acking (its subscription ended) goes to
// another member at once. Entries are delivered in append order.
//
// Memory is not Watermill's GoChannel on purpose: GoChannel hands each
// message to its subscribers from a goroutine of its own (so order is not
// kept), cannot replay to a late subscriber without keeping every message
// forever, and has no consumer groups.
//
// Everything lives in this value: two Memory values never see each other.
// Memory is safe for concurrent use; Close ends every subscription on it.
type Memory struct {
	logger watermill.LoggerAdapter

	mu      sync.Mutex
	streams map[string]*memStream
	closed  bool
	closing chan struct{}
	wg      sync.WaitGroup // one per running reader goroutine
}

type memStream struct {
	entries []memEntry // entries[i] has id first+i
	first   uint64
	next    uint64        // id of the next appended entry
	wake    chan struct{} // closed (and replaced) when entries or a group change
	groups  map[string]*memGroup
}

type memEntry struct {
	id     uint64
	fields map[string]any // read-only once appended
}

type memGroup struct {
	next     uint64     // id of the next entry to hand out
	returned []memEntry // entries given back unacked; handed out first
}

// NewMemory returns an empty in-process backend.
func NewMemory(logger watermill.LoggerAdapter) *Memory {
	if logger == nil {
		logger = watermill.NopLogger{}
	}
	return &Memory{logger: logger, streams: map[string]*memStream{}, closing: make(chan struct{})}
}

// Ping fails only after Close.
func (m *Memory) Ping(context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return fmt.Errorf("memory stream %w", errClosed)
	}
	return nil
}

// Close ends every subscription and waits for their goroutines.
func (m *Memory) Close() error {
	m.mu.Lock()
	if !m.closed {
		m.closed = true
		close(m.closing)
	}
	m.mu.Unlock()
	m.wg.Wait()
	return nil
}

// stream returns the named stream, creating it; m.mu must be held.
func (m *Memory) stream(name string) *memStream {
	s, ok := m.streams[name]
	if !ok {
		s = &memStream{first: 1, next: 1, wake: make(chan struct{}), groups: map[string]*memGroup{}}
		m.streams[name] = s
	}
	return s
}

// changed wakes the readers of s; m.mu must be held.
func (s *memStream) changed() {
	close(s.wake)
	s.wake = make(chan struct{})
}

// add appends an entry and trims the stream to about maxLen entries (0: no
// trimming). Like Redis' "MAXLEN ~", it trims in batches: the length may
// exceed maxLen by up to a tenth before old entries are dropped.
func (m *Memory) add(stream string, maxLen int64, fields map[string]any) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return fmt.Errorf("memory stream %w", errClosed)
	}
	s := m.stream(stream)
	s.entries = append(s.entries, memEntry{id: s.next, fields: fields})
	s.next++
	if n := int64(len(s.entries)); maxLen > 0 && n > maxLen+maxLen/10 {
		drop := n - maxLen
		s.entries = append([]memEntry(nil), s.entries[drop:]...)
		s.first += uint64(drop)
	}
	s.changed()
	return nil
}

func (m *Memory) newWriter(layout Layout, _ watermill.LoggerAdapter) (writer, error) {
	return &memWriter{m: m, layout: layout}, nil
}

func (m *Memory) newReader(Layout, watermill.LoggerAdapter) (reader, error) {
	return memReader{m: m}, nil
}

type memWriter struct {
	m      *Memory
	layout Layout
}

func (w *memWriter) write(stream string, wire ...*message.Message) error {
	for _, msg := range wire {
		fields, err := entryFields(msg)
		if err != nil {
			return err
		}
		if err := w.m.add(stream, w.layout.maxLen(stream), fields); err != nil {
			return err
		}
	}
	return nil
}

func (w *memWriter) Close() error { return nil }

type memReader struct{ m *Memory }

func (r memReader) Close() error { return nil }

// read starts a reader goroutine (see reader). Reading from a group creates
// it, positioned at the end of the stream, or at its oldest retained entry
// when spec.oldest.
func (r memReader) read(ctx context.Context, stream string, spec readSpec) (<-chan *message.Message, error) {
	m := r.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, fmt.Errorf("memory stream %w", errClosed)
	}
	s := m.stream(stream)
	var g *memGroup
	pos := s.next
	if spec.oldest {
		pos = s.first
	}
	if spec.group != "" {
		var ok bool
		if g, ok = s.groups[spec.group]; !ok {
			g = &memGroup{next: pos}
			s.groups[spec.group] = g
		}
	}
	out := make(chan *message.Message)
	m.wg.Add(1)
	go m.readLoop(ctx, s, g, pos, out)
	return out, nil
}

func (m *Memory) readLoop(ctx context.Context, s *memStream, g *memGroup, pos uint64, out chan<- *message.Message) {
	defer m.wg.Done()
	defer close(out)
	for {
		e, ok := m.nextEntry(ctx, s, g, &pos)
		if !ok {
			return
		}
		if !m.deliver(ctx, e, out) {
			if g != nil {
				m.mu.Lock()
				g.returned = append(g.returned, e)
				s.changed()
				m.mu.Unlock()
			}
			return
		}
	}
}

// nextEntry waits for the next entry for this reader: from the group when g
// is set, else at *pos. A reader that fell behind the trimmed start skips to
// it. It returns false when ctx is done or m closes.
func (m *Memory) nextEntry(ctx context.Context, s *memStream, g *memGroup, pos *uint64) (memEntry, bool) {
	for {
		m.mu.Lock()
		next := pos
		if g != nil {
			if len(g.returned) > 0 {
				e := g.returned[0]
				g.returned = g.returned[1:]
				m.mu.Unlock()
				return e, true
			}
			next = &g.next
		}
		*next = max(*next, s.first)
		if *next < s.next {
			e := s.entries[*next-s.first]
			*next++
			m.mu.Unlock()
			return e, true
		}
		wake := s.wake
		m.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
			return memEntry{}, false
		case <-m.closing:
			return memEntry{}, false
		}
	}
}

// deliver hands e to out until it is acked, resending it on nack. It returns
// false when ctx is done or m closes first.
func (m *Memory) deliver(ctx context.Context, e memEntry, out chan<- *message.Message) bool {
	msgCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	msg := decodeEntry(e.fields)
	for {
		msg.SetContext(msgCtx)
		select {
		case out <- msg:
		case <-ctx.Done():
			return false
		case <-m.closing:
			return false
		}
		select {
		case <-msg.Acked():
			return true
		case <-msg.Nacked():
			msg = msg.Copy()
		case <-ctx.Done():
			return false
		case <-m.closing:
			return false
		}
	}
}
