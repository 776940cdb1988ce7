package stream

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmnats "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/nats"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Defaults of a NATSConfig.
const (
	DefaultNATSAckWait = 30 * time.Second
	// natsRequestTimeout bounds one JetStream API request (creating a
	// stream or a consumer, reading stream info).
	natsRequestTimeout = 10 * time.Second
)

// NATSConfig configures the NATS JetStream backend.
type NATSConfig struct {
	// URL is the NATS server (JetStream enabled), e.g. nats://127.0.0.1:4222.
	// Required.
	URL string
	// AckWait is how long a message of a competing group stays with the
	// member that received it, unacked, before JetStream delivers it to
	// another member (a member that died). Handlers slower than this get
	// duplicates. It is fixed when a group's consumer is created.
	// Default DefaultNATSAckWait.
	AckWait time.Duration
}

func (c *NATSConfig) setDefaults() {
	if c.AckWait == 0 {
		c.AckWait = DefaultNATSAckWait
	}
}

// Validate reports a configuration error.
func (c NATSConfig) Validate() error {
	if c.URL == "" {
		return errors.New("nats stream: URL is empty")
	}
	if c.AckWait < 0 {
		return errors.New("nats stream: AckWait must not be negative")
	}
	return nil
}

// NATS is the NATS JetStream backend. Each physical stream is a JetStream
// stream of its own, file-backed, with one subject; both are named
// NATSStreamName(stream), because stream names and subjects cannot hold
// ':' or '.'. Layout.MaxLen becomes the stream's MaxMsgs (oldest messages
// are discarded first); 0 means no limit.
//
// Publishing uses watermill-nats (pkg/nats with JetStream): Publish returns
// once JetStream acknowledged every message. The entry's "message" field is
// the NATS message's data, its "metadata" field a header of that name, and
// the event id the header _watermill_message_uuid.
//
// Reading is written here on nats.go's jetstream package, because
// watermill-nats' JetStream subscribers close their output channel while a
// message callback may still send on it, and crash on a message they cannot
// unmarshal:
//
//   - ModeBroadcast uses an ordered consumer (ephemeral, no acks, recreated
//     by the client at its next sequence after a disconnect). It starts at the
//     stream's last sequence + 1 as read when Subscribe runs, or at the first
//     retained message with StartOldest. Acks are local; a nack delivers the
//     message again at once.
//   - ModeCompeting uses a durable pull consumer per stream and group
//     (named NATSStreamName(group+"@"+pattern)), with explicit acks. A new
//     group starts with the messages stored after it was created
//     (DeliverNew) or at the oldest (StartOldest); an existing one resumes.
//     Each member pulls one message at a time, with a pull request that
//     waits up to a second (an idle member asks again every second); a nack
//     asks JetStream to deliver the message again, to any member; a member
//     that ends naks the message it holds (ending waits for its pull
//     request in flight, up to a second), and JetStream redelivers what a
//     member held when it died once AckWait has passed.
//
// NATS is safe for concurrent use. Publishers and Subscribers built on it
// each have a connection of their own, opened on first use; while it is
// down, publishing and subscribing fail at once.
type NATS struct {
	cfg    NATSConfig
	logger watermill.LoggerAdapter

	mu   sync.Mutex
	ping *natsLink
}

// NewNATS checks cfg; it does not connect (use Ping).
func NewNATS(cfg NATSConfig, logger watermill.LoggerAdapter) (*NATS, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = watermill.NopLogger{}
	}
	return &NATS{cfg: cfg, logger: logger}, nil
}

// NATSStreamName is the JetStream stream name, and the subject, of a
// physical stream: letters, digits and '-' stay, every other byte becomes
// "_XX" ("nvent:store-sync" → "nvent_3Astore-sync"); names over 200 bytes
// end with a hash.
func NATSStreamName(stream string) string { return brokerName(stream, alnumDash, 200) }

// natsLink is a connection opened on first use, and again on the next use
// after an attempt failed (so that nothing needs NATS to be up to be
// built); once open, nats.go keeps reconnecting it.
type natsLink struct {
	url  string
	name string

	mu     sync.Mutex
	conn   *nats.Conn
	js     jetstream.JetStream
	closed bool
}

// errNATSDisconnected fails a request at once while the connection is
// down (it reconnects in the background) instead of waiting for request
// timeouts.
var errNATSDisconnected = errors.New("not connected to nats")

// get returns the open connection, connecting first if needed.
func (l *natsLink) get() (*nats.Conn, jetstream.JetStream, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, nil, fmt.Errorf("nats connection %w", errClosed)
	}
	if l.conn == nil {
		conn, err := nats.Connect(l.url, nats.Name(l.name), nats.Timeout(5*time.Second),
			nats.MaxReconnects(-1), nats.ReconnectWait(500*time.Millisecond))
		if err != nil {
			return nil, nil, fmt.Errorf("error connecting to nats: %w", err)
		}
		js, err := jetstream.New(conn)
		if err != nil {
			conn.Close()
			return nil, nil, fmt.Errorf("error creating jetstream client: %w", err)
		}
		l.conn, l.js = conn, js
	}
	if !l.conn.IsConnected() {
		return nil, nil, errNATSDisconnected
	}
	return l.conn, l.js, nil
}

// close closes the connection, if one was opened; get fails afterwards.
func (l *natsLink) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	if l.conn != nil {
		l.conn.Close()
	}
}

// Ping checks that the server answers JetStream requests, on a connection
// kept for it.
func (n *NATS) Ping(ctx context.Context) error {
	n.mu.Lock()
	if n.ping == nil {
		n.ping = &natsLink{url: n.cfg.URL, name: "nvent-ping"}
	}
	link := n.ping
	n.mu.Unlock()
	_, js, err := link.get()
	if err != nil {
		return fmt.Errorf("error pinging nats: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, natsRequestTimeout)
	defer cancel()
	if _, err := js.AccountInfo(ctx); err != nil {
		return fmt.Errorf("error pinging nats jetstream: %w", err)
	}
	return nil
}

// Close closes the Ping connection.
func (n *NATS) Close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ping != nil {
		n.ping.close()
		n.ping = nil
	}
	return nil
}

// natsStreams creates the JetStream streams of a layout's physical streams
// on first use, and remembers which exist.
type natsStreams struct {
	layout Layout

	mu    sync.Mutex
	ready map[string]jetstream.Stream
}

// ensure creates (or updates the limits of) the JetStream stream of stream.
func (s *natsStreams) ensure(ctx context.Context, js jetstream.JetStream, stream string) (jetstream.Stream, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st, ok := s.ready[stream]; ok {
		return st, nil
	}
	maxMsgs := s.layout.maxLen(stream)
	if maxMsgs == 0 {
		maxMsgs = -1
	}
	name := NATSStreamName(stream)
	cfg := jetstream.StreamConfig{
		Name:        name,
		Description: "nvent stream " + stream,
		Subjects:    []string{name},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Discard:     jetstream.DiscardOld,
		MaxMsgs:     maxMsgs,
	}
	ctx, cancel := context.WithTimeout(ctx, natsRequestTimeout)
	defer cancel()
	st, err := js.CreateOrUpdateStream(ctx, cfg)
	if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) { // created meanwhile by another process
		st, err = js.CreateOrUpdateStream(ctx, cfg)
	}
	if err != nil {
		return nil, fmt.Errorf("error creating jetstream stream %s: %w", name, err)
	}
	s.ready[stream] = st
	return st, nil
}

// forget makes the next ensure create the stream again (it was deleted).
func (s *natsStreams) forget(stream string) {
	s.mu.Lock()
	delete(s.ready, stream)
	s.mu.Unlock()
}

func (n *NATS) newWriter(layout Layout, logger watermill.LoggerAdapter) (writer, error) {
	return &natsWriter{link: &natsLink{url: n.cfg.URL, name: "nvent-publisher"}, logger: logger,
		streams: &natsStreams{layout: layout, ready: map[string]jetstream.Stream{}}}, nil
}

// natsWriter publishes with a watermill-nats Publisher on its link's
// connection, created with the connection.
type natsWriter struct {
	link    *natsLink
	logger  watermill.LoggerAdapter
	streams *natsStreams

	mu sync.Mutex
	p  *wmnats.Publisher
}

func (w *natsWriter) publisher() (*wmnats.Publisher, jetstream.JetStream, error) {
	conn, js, err := w.link.get()
	if err != nil {
		return nil, nil, err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.p == nil {
		p, err := wmnats.NewPublisherWithNatsConn(conn, wmnats.PublisherPublishConfig{
			Marshaler:         natsMarshaler{},
			SubjectCalculator: wmnats.DefaultSubjectCalculator,
		}, w.logger)
		if err != nil {
			return nil, nil, fmt.Errorf("error creating nats publisher: %w", err)
		}
		w.p = p
	}
	return w.p, js, nil
}

// write publishes to the stream's subject, creating the stream first. A
// publish that finds no stream (deleted meanwhile) creates it and tries
// once more.
func (w *natsWriter) write(stream string, wire ...*message.Message) error {
	p, js, err := w.publisher()
	if err != nil {
		return err
	}
	if _, err := w.streams.ensure(context.Background(), js, stream); err != nil {
		return err
	}
	err = p.Publish(NATSStreamName(stream), wire...)
	if errors.Is(err, nats.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) {
		w.streams.forget(stream)
		if _, err := w.streams.ensure(context.Background(), js, stream); err != nil {
			return err
		}
		err = p.Publish(NATSStreamName(stream), wire...)
	}
	return err
}

// natsBatchTimeout bounds the wait for JetStream's acknowledgements of one
// batch.
const natsBatchTimeout = 30 * time.Second

// writeBatch publishes a Batch's entries asynchronously, in order on the
// one connection, then waits for every acknowledgement: one round trip's
// wait for the batch instead of one per message. An error (a stream
// deleted meanwhile, say) fails the batch, which the Batch then writes
// again whole.
func (w *natsWriter) writeBatch(entries []queuedEntry) error {
	_, js, err := w.publisher()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), natsBatchTimeout)
	defer cancel()
	futures := make([]jetstream.PubAckFuture, 0, len(entries))
	for i, e := range entries {
		if i == 0 || e.stream != entries[i-1].stream {
			if _, err := w.streams.ensure(ctx, js, e.stream); err != nil {
				return err
			}
		}
		msg, err := natsMarshaler{}.Marshal(NATSStreamName(e.stream), e.wire)
		if err != nil {
			return err
		}
		f, err := js.PublishMsgAsync(msg)
		if err != nil {
			w.streams.forget(e.stream)
			return fmt.Errorf("error publishing to %s: %w", e.stream, err)
		}
		futures = append(futures, f)
	}
	for i, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			w.streams.forget(entries[i].stream)
			return fmt.Errorf("error publishing to %s: %w", entries[i].stream, err)
		case <-ctx.Done():
			return fmt.Errorf("error publishing %d messages: no acknowledgement within %v", len(entries), natsBatchTimeout)
		}
	}
	return nil
}

// Close closes the connection (watermill-nats' Publisher.Close would do
// the same).
func (w *natsWriter) Close() error {
	w.link.close()
	return nil
}

// natsUUIDHeader carries the event id, as watermill-nats names it.
const natsUUIDHeader = wmnats.WatermillUUIDHdr

// natsMarshaler maps a wire message onto a NATS message: the payload (the
// encoded Message) as data, the metadata as one JSON header.
type natsMarshaler struct{}

func (natsMarshaler) Marshal(subject string, wire *message.Message) (*nats.Msg, error) {
	fields, err := entryFields(wire)
	if err != nil {
		return nil, err
	}
	hdr := nats.Header{natsUUIDHeader: {wire.UUID}}
	if md, ok := fields[fieldMetadata].(string); ok {
		hdr[fieldMetadata] = []string{md}
	}
	return &nats.Msg{Subject: subject, Data: wire.Payload, Header: hdr}, nil
}

// natsEntry returns the entry fields of a stored NATS message: its data as
// "message" (absent when empty) and each header that NATS and watermill-nats
// do not reserve.
func natsEntry(data []byte, hdr nats.Header) map[string]any {
	fields := make(map[string]any, len(hdr)+1)
	for k, v := range hdr {
		if k == natsUUIDHeader || strings.HasPrefix(k, "Nats-") || len(v) == 0 {
			continue
		}
		fields[k] = v[0]
	}
	if len(data) > 0 {
		fields[fieldMessage] = data
	}
	return fields
}

func (n *NATS) newReader(layout Layout, logger watermill.LoggerAdapter) (reader, error) {
	return &natsReader{n: n, logger: logger, link: &natsLink{url: n.cfg.URL, name: "nvent-subscriber"},
		streams: &natsStreams{layout: layout, ready: map[string]jetstream.Stream{}}}, nil
}

type natsReader struct {
	n       *NATS
	logger  watermill.LoggerAdapter
	link    *natsLink
	streams *natsStreams
	wg      sync.WaitGroup
}

// read creates the consumer (see NATS) before it returns, so that a
// broadcast read misses nothing stored after that.
func (r *natsReader) read(ctx context.Context, stream string, spec readSpec) (<-chan *message.Message, error) {
	_, js, err := r.link.get()
	if err != nil {
		return nil, err
	}
	st, err := r.streams.ensure(ctx, js, stream)
	if err != nil {
		return nil, err
	}
	reqCtx, cancel := context.WithTimeout(ctx, natsRequestTimeout)
	defer cancel()
	out := make(chan *message.Message)
	if spec.group != "" {
		cons, err := r.groupConsumer(reqCtx, st, stream, spec)
		if err != nil {
			return nil, err
		}
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			defer close(out)
			r.fetchLoop(ctx, stream, cons, out)
		}()
		return out, nil
	}
	cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy, InactiveThreshold: time.Minute}
	if !spec.oldest {
		info, err := st.Info(reqCtx)
		if err != nil {
			r.streams.forget(stream)
			return nil, fmt.Errorf("error reading jetstream stream %s: %w", NATSStreamName(stream), err)
		}
		cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cfg.OptStartSeq = info.State.LastSeq + 1
	}
	cons, err := st.OrderedConsumer(reqCtx, cfg)
	if err != nil {
		return nil, fmt.Errorf("error creating jetstream consumer of %s: %w", stream, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return nil, fmt.Errorf("error reading jetstream consumer of %s: %w", stream, err)
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer close(out)
		defer func() { // Stop does not delete an ordered consumer
			if info := cons.CachedInfo(); info != nil {
				dctx, cancel := context.WithTimeout(context.Background(), time.Second)
				defer cancel()
				_ = st.DeleteConsumer(dctx, info.Name)
			}
		}()
		stop := context.AfterFunc(ctx, it.Stop) // ends a blocked Next
		defer stop()
		defer it.Stop()
		for {
			m, err := it.Next()
			if err != nil {
				if ctx.Err() == nil && !errors.Is(err, jetstream.ErrMsgIteratorClosed) {
					r.logger.Error("Error reading jetstream consumer, ending the read", err, watermill.LogFields{"stream": stream})
				}
				return
			}
			if !deliverNATS(ctx, m, false, out, r.logger) {
				return
			}
		}
	}()
	return out, nil
}

// natsFetchWait is how long one pull request of a group member waits for a
// message: an idle member asks again this often, and ending a read waits
// for the request in flight (for at most this long), so that a message it
// brings is nacked, not left to AckWait.
const natsFetchWait = time.Second

// fetchLoop reads a group's consumer one message per pull request (rather
// than with jetstream's Messages iterator, which buffers pulled messages in
// a channel of the batch size and drops what overflows it), and hands each
// to out. It returns when ctx is done or the consumer is gone (deleted:
// the Subscriber subscribes again and creates it).
func (r *natsReader) fetchLoop(ctx context.Context, stream string, cons jetstream.Consumer, out chan<- *message.Message) {
	fields := watermill.LogFields{"stream": stream}
	for ctx.Err() == nil {
		batch, err := cons.Fetch(1, jetstream.FetchMaxWait(natsFetchWait))
		if err != nil {
			if consumerGone(ctx, cons, err) {
				r.endGone(ctx, fields)
				return
			}
			r.logger.Error("Error pulling from jetstream consumer, trying again in 1s", err, fields)
			select {
			case <-time.After(time.Second):
			case <-ctx.Done():
			}
			continue
		}
		var m jetstream.Msg
		select {
		case m = <-batch.Messages():
		case <-ctx.Done():
			for m := range batch.Messages() {
				_ = m.Nak()
			}
			return
		}
		if m == nil {
			// An empty pull: the wait passed, or it failed. A pull to a
			// consumer deleted before it was sent fails as a mere wait,
			// so both check that the consumer is still there.
			err := batch.Error()
			switch {
			case consumerGone(ctx, cons, err):
				r.endGone(ctx, fields)
				return
			case err == nil:
			default:
				r.logger.Error("Error pulling from jetstream consumer, trying again in 1s", err, fields)
				select {
				case <-time.After(time.Second):
				case <-ctx.Done():
				}
			}
			continue
		}
		if !deliverNATS(ctx, m, true, out, r.logger) {
			return
		}
	}
}

// endGone ends a read whose consumer is gone, after a pause: the
// Subscriber then subscribes again and re-creates the consumer, and doing
// that at once races the server's deletion of the old one (NATS fails the
// delete with "directory not empty").
func (r *natsReader) endGone(ctx context.Context, fields watermill.LogFields) {
	r.logger.Info("JetStream consumer gone, ending the read", fields)
	select {
	case <-time.After(natsFetchWait):
	case <-ctx.Done():
	}
}

// consumerGone reports whether the group's consumer no longer exists after
// a pull that failed with err (or came back empty, err nil): the error says
// so, or the consumer's info cannot be found (a pull sent to a consumer
// already deleted comes back empty, without an error, after its wait).
func consumerGone(ctx context.Context, cons jetstream.Consumer, err error) bool {
	if errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound) {
		return true
	}
	ictx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, ierr := cons.Info(ictx)
	return errors.Is(ierr, jetstream.ErrConsumerNotFound) || errors.Is(ierr, jetstream.ErrStreamNotFound)
}

// groupConsumer returns the durable consumer of a competing group,
// creating it when it does not exist yet.
func (r *natsReader) groupConsumer(ctx context.Context, st jetstream.Stream, stream string, spec readSpec) (jetstream.Consumer, error) {
	name := NATSStreamName(spec.group)
	cons, err := st.Consumer(ctx, name)
	if err == nil {
		return cons, nil
	}
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		r.streams.forget(stream)
	}
	if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, fmt.Errorf("error reading jetstream consumer %s of %s: %w", name, stream, err)
	}
	policy := jetstream.DeliverNewPolicy
	if spec.oldest {
		policy = jetstream.DeliverAllPolicy
	}
	cons, err = st.CreateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:       name,
		Description:   "nvent group " + spec.group,
		DeliverPolicy: policy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       r.n.cfg.AckWait,
	})
	if errors.Is(err, jetstream.ErrConsumerExists) { // created meanwhile by another member
		cons, err = st.Consumer(ctx, name)
	}
	if err != nil {
		return nil, fmt.Errorf("error creating jetstream consumer %s of %s: %w", name, stream, err)
	}
	return cons, nil
}

// deliverNATS hands one stored message to out until it is acked and reports
// whether the read goes on. For a group (explicit acks) the ack and nack go
// to JetStream, and a message still unacked when ctx ends is nacked so that
// another member gets it at once; for broadcast a nack delivers the message
// again from here.
func deliverNATS(ctx context.Context, m jetstream.Msg, group bool, out chan<- *message.Message, logger watermill.LoggerAdapter) bool {
	msg := decodeEntry(natsEntry(m.Data(), m.Headers()))
	msgCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	giveBack := func() {
		if group {
			if err := m.Nak(); err != nil && ctx.Err() == nil {
				logger.Error("Error nacking jetstream message", err, nil)
			}
		}
	}
	for {
		msg.SetContext(msgCtx)
		select {
		case out <- msg:
		case <-ctx.Done():
			giveBack()
			return false
		}
		select {
		case <-msg.Acked():
			if group {
				actx, cancel := context.WithTimeout(context.Background(), natsRequestTimeout)
				err := m.DoubleAck(actx)
				cancel()
				if err != nil {
					logger.Error("Error acking jetstream message, it will come again", err, nil)
				}
			}
			return true
		case <-msg.Nacked():
			if group {
				giveBack()
				return true
			}
			msg = msg.Copy()
		case <-ctx.Done():
			giveBack()
			return false
		}
	}
}

// Close waits for the reads (whose ctx must be done) and closes the
// connection.
func (r *natsReader) Close() error {
	r.wg.Wait()
	r.link.close()
	return nil
}
