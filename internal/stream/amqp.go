package stream

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmamqp "github.com/ThreeDotsLabs/watermill-amqp/v3/pkg/amqp"
	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"
)

// ErrNoReplay is returned by Subscribe on the AMQP backend for a delivery
// that would need messages published before the subscription's queue
// existed: broadcast with StartOldest, or a competing group that does not
// exist yet with StartOldest. AMQP brokers keep no history; a queue holds
// only what was routed to it.
var ErrNoReplay = errors.New("amqp stream cannot replay messages published before the subscription's queue existed")

// amqpDialTimeout bounds connecting to the broker.
const amqpDialTimeout = 5 * time.Second

// AMQPConfig configures the AMQP (RabbitMQ) backend.
type AMQPConfig struct {
	// URL is the broker, e.g. amqp://guest:guest@127.0.0.1:5672/. Required.
	URL string
}

// Validate reports a configuration error.
func (c AMQPConfig) Validate() error {
	if c.URL == "" {
		return errors.New("amqp stream: URL is empty")
	}
	if _, err := amqp.ParseURI(c.URL); err != nil {
		return fmt.Errorf("amqp stream: invalid URL: %w", err)
	}
	return nil
}

// AMQP is the AMQP 0-9-1 backend (RabbitMQ), built on watermill-amqp. An
// AMQP broker routes messages to queues and keeps nothing else, so a
// physical stream is a durable fanout exchange (named
// AMQPExchange(stream)), and what reads it are queues bound to it:
//
//   - ModeBroadcast: a queue per subscription, exclusive to its connection
//     and deleted with it ("{exchange}.b.{id}"). It holds what is published
//     after Subscribe returned. StartOldest cannot be served: Subscribe
//     fails with ErrNoReplay. After a lost connection the queue is declared
//     again, empty: what was published meanwhile is not delivered (the store
//     fills such gaps).
//   - ModeCompeting: a durable queue per stream and group
//     ("{exchange}.g.{group@pattern}", see AMQPGroupQueue), shared by the
//     members, which take one message at a time (prefetch 1). It holds
//     messages from the moment it was first declared (by the group's first
//     Subscribe, or DeclareGroup), across restarts of members and broker
//     (messages are persistent). A new group with StartOldest fails with
//     ErrNoReplay unless DeclareGroup created its queue earlier.
//
// Both queues are bounded by Layout.MaxLen (x-max-length; the oldest
// messages are dropped first). Changing MaxLen for an existing group queue
// needs the queue deleted first (RabbitMQ refuses to redeclare a queue with
// other arguments).
//
// Publishing waits for the broker's confirm of every message. A nacked
// message is requeued at once (to any member for a group); a member whose
// channel or connection closes gives its unacked message back at once. The
// entry's "message" field is the AMQP body, its "metadata" field a header
// of that name, and the event id the header _watermill_message_uuid.
//
// AMQP is safe for concurrent use. Each Publisher and each Subscriber has a
// connection of its own, opened on first use.
type AMQP struct {
	cfg    AMQPConfig
	logger watermill.LoggerAdapter

	mu   sync.Mutex
	ping *amqp.Connection

	// declared records the exchanges and durable queues declared through
	// this value, so that tests can delete them (see forgetDeclared).
	declared sync.Map // "exchange:"+name or "queue:"+name → struct{}
}

// NewAMQP checks cfg; it does not connect (use Ping).
func NewAMQP(cfg AMQPConfig, logger watermill.LoggerAdapter) (*AMQP, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = watermill.NopLogger{}
	}
	return &AMQP{cfg: cfg, logger: logger}, nil
}

// AMQPExchange is the exchange of a physical stream: letters, digits and
// "-:." stay, every other byte becomes "_XX" ("nvent:store-sync" stays as it
// is); names over 200 bytes end with a hash.
func AMQPExchange(stream string) string { return brokerName(stream, amqpNameByte, 200) }

// AMQPGroupQueue is the durable queue of a competing group (Delivery.Group)
// subscribed with pattern, on one physical stream.
func AMQPGroupQueue(stream, group, pattern string) string {
	return AMQPExchange(stream) + ".g." + brokerName(groupKey(group, pattern), amqpNameByte, 200)
}

func amqpNameByte(c byte) bool { return alnumDash(c) || c == ':' || c == '.' }

func (a *AMQP) dialConfig() amqp.Config {
	return amqp.Config{
		Dial:       amqp.DefaultDial(amqpDialTimeout),
		Heartbeat:  10 * time.Second,
		Properties: amqp.Table{"connection_name": "nvent"},
	}
}

// Ping opens a channel on a connection kept for it (dialled again when
// closed).
func (a *AMQP) Ping(ctx context.Context) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	done := make(chan error, 1)
	go func() {
		if a.ping == nil || a.ping.IsClosed() {
			conn, err := amqp.DialConfig(a.cfg.URL, a.dialConfig())
			if err != nil {
				done <- err
				return
			}
			a.ping = conn
		}
		ch, err := a.ping.Channel()
		if err == nil {
			err = ch.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("error pinging amqp broker: %w", err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("error pinging amqp broker: %w", ctx.Err())
	}
}

// Close closes the Ping connection.
func (a *AMQP) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.ping != nil && !a.ping.IsClosed() {
		if err := a.ping.Close(); err != nil && !errors.Is(err, amqp.ErrClosed) {
			return fmt.Errorf("error closing amqp connection: %w", err)
		}
	}
	a.ping = nil
	return nil
}

// config is the watermill-amqp configuration of one exchange and (for
// reading) one queue.
func (a *AMQP) config(layout Layout, stream string, queue amqpQueue) wmamqp.Config {
	dial := a.dialConfig()
	args := amqp.Table{}
	if n := layout.maxLen(stream); n > 0 {
		args["x-max-length"] = n
	}
	return wmamqp.Config{
		Connection: wmamqp.ConnectionConfig{AmqpURI: a.cfg.URL, AmqpConfig: &dial, Reconnect: wmamqp.DefaultReconnectConfig()},
		Marshaler:  amqpMarshaler{},
		Exchange: wmamqp.ExchangeConfig{
			GenerateName: func(string) string { return AMQPExchange(stream) },
			Type:         "fanout",
			Durable:      true,
		},
		Queue: wmamqp.QueueConfig{
			GenerateName: func(string) string { return queue.name },
			Durable:      queue.durable,
			AutoDelete:   !queue.durable,
			Exclusive:    !queue.durable,
			Arguments:    args,
		},
		QueueBind: wmamqp.QueueBindConfig{GenerateRoutingKey: func(string) string { return "" }},
		Publish: wmamqp.PublishConfig{
			GenerateRoutingKey: func(string) string { return "" },
			ConfirmDelivery:    true,
		},
		Consume:         wmamqp.ConsumeConfig{Qos: wmamqp.QosConfig{PrefetchCount: 1}},
		TopologyBuilder: amqpTopology{a: a},
	}
}

type amqpQueue struct {
	name    string
	durable bool // a group's queue; else a broadcast subscription's
}

// amqpTopology is watermill-amqp's default topology that records what it
// declares.
type amqpTopology struct{ a *AMQP }

func (t amqpTopology) ExchangeDeclare(ch *amqp.Channel, name string, cfg wmamqp.Config) error {
	if err := (&wmamqp.DefaultTopologyBuilder{}).ExchangeDeclare(ch, name, cfg); err != nil {
		return err
	}
	t.a.declared.Store("exchange:"+name, struct{}{})
	return nil
}

func (t amqpTopology) BuildTopology(ch *amqp.Channel, params wmamqp.BuildTopologyParams, cfg wmamqp.Config, logger watermill.LoggerAdapter) error {
	if err := (&wmamqp.DefaultTopologyBuilder{}).BuildTopology(ch, params, cfg, logger); err != nil {
		return err
	}
	t.a.declared.Store("exchange:"+params.ExchangeName, struct{}{})
	if cfg.Queue.Durable {
		t.a.declared.Store("queue:"+params.QueueName, struct{}{})
	}
	return nil
}

// withConnection runs f on a connection of its own, closed afterwards.
func (a *AMQP) withConnection(ctx context.Context, f func(conn *amqp.Connection) error) error {
	done := make(chan error, 1)
	go func() {
		conn, err := amqp.DialConfig(a.cfg.URL, a.dialConfig())
		if err != nil {
			done <- fmt.Errorf("error connecting to amqp broker: %w", err)
			return
		}
		defer conn.Close()
		done <- f(conn)
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// withChannel runs f on a channel of a connection of its own.
func (a *AMQP) withChannel(ctx context.Context, f func(ch *amqp.Channel) error) error {
	return a.withConnection(ctx, func(conn *amqp.Connection) error {
		ch, err := conn.Channel()
		if err != nil {
			return err
		}
		return f(ch)
	})
}

// DeclareGroup declares the exchanges and the queues of a competing group
// (Delivery.Group, subscribed with pattern) without subscribing, so that
// the group keeps the messages published from now on although no member
// runs yet. Declaring an existing group changes nothing.
func (a *AMQP) DeclareGroup(ctx context.Context, layout Layout, group, pattern string) error {
	layout.setDefaults()
	if err := (Delivery{Mode: ModeCompeting, Group: group}).Validate(); err != nil {
		return err
	}
	streams, err := layout.StreamsFor(pattern)
	if err != nil {
		return err
	}
	return a.withChannel(ctx, func(ch *amqp.Channel) error {
		for _, stream := range streams {
			q := amqpQueue{name: AMQPGroupQueue(stream, group, pattern), durable: true}
			cfg := a.config(layout, stream, q)
			params := wmamqp.BuildTopologyParams{ExchangeName: AMQPExchange(stream), QueueName: q.name}
			if err := cfg.TopologyBuilder.BuildTopology(ch, params, cfg, a.logger); err != nil {
				return fmt.Errorf("error declaring group queue %s: %w", q.name, err)
			}
		}
		return nil
	})
}

// DeleteGroup deletes the queues of a competing group, with the messages
// they hold; deleting a group that does not exist is not an error.
func (a *AMQP) DeleteGroup(ctx context.Context, layout Layout, group, pattern string) error {
	layout.setDefaults()
	streams, err := layout.StreamsFor(pattern)
	if err != nil {
		return err
	}
	names := make([]string, len(streams))
	for i, s := range streams {
		names[i] = AMQPGroupQueue(s, group, pattern)
	}
	return a.deleteNames(ctx, names, nil)
}

// DeleteExchanges deletes the exchanges of the given channels (their
// physical streams); queues bound to them stay, unbound.
func (a *AMQP) DeleteExchanges(ctx context.Context, layout Layout, channels ...string) error {
	layout.setDefaults()
	names := make([]string, len(channels))
	for i, c := range channels {
		names[i] = AMQPExchange(layout.KeyPrefix + c)
	}
	return a.deleteNames(ctx, nil, names)
}

// deleteNames deletes queues and exchanges, each on a channel of its own (a
// failed delete closes its channel). A name that does not exist is skipped.
func (a *AMQP) deleteNames(ctx context.Context, queues, exchanges []string) error {
	return a.withConnection(ctx, func(conn *amqp.Connection) error {
		del := func(f func(ch *amqp.Channel) error) error {
			ch, err := conn.Channel()
			if err != nil {
				return err
			}
			err = f(ch)
			var aerr *amqp.Error
			if errors.As(err, &aerr) && aerr.Code == amqp.NotFound {
				return nil // the failure closed the channel
			}
			return errors.Join(err, ch.Close())
		}
		var errs []error
		for _, q := range queues {
			errs = append(errs, del(func(ch *amqp.Channel) error { _, err := ch.QueueDelete(q, false, false, false); return err }))
			a.declared.Delete("queue:" + q)
		}
		for _, e := range exchanges {
			errs = append(errs, del(func(ch *amqp.Channel) error { return ch.ExchangeDelete(e, false, false) }))
			a.declared.Delete("exchange:" + e)
		}
		return errors.Join(errs...)
	})
}

// forgetDeclared deletes every exchange and durable queue declared through
// a (tests use it to leave the broker as they found it).
func (a *AMQP) forgetDeclared(ctx context.Context) error {
	var queues, exchanges []string
	a.declared.Range(func(k, _ any) bool {
		if name, ok := strings.CutPrefix(k.(string), "queue:"); ok {
			queues = append(queues, name)
		} else if name, ok := strings.CutPrefix(k.(string), "exchange:"); ok {
			exchanges = append(exchanges, name)
		}
		return true
	})
	if len(queues)+len(exchanges) == 0 {
		return nil
	}
	return a.deleteNames(ctx, queues, exchanges)
}

func (a *AMQP) newWriter(layout Layout, logger watermill.LoggerAdapter) (writer, error) {
	return &amqpWriter{a: a, layout: layout, logger: logger}, nil
}

// amqpWriter publishes through a watermill-amqp Publisher created on the
// first write (and again after a failure to create it), so that building a
// publisher does not need the broker.
type amqpWriter struct {
	a      *AMQP
	layout Layout
	logger watermill.LoggerAdapter

	mu sync.Mutex
	p  *wmamqp.Publisher
}

func (w *amqpWriter) publisher() (*wmamqp.Publisher, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.p != nil {
		return w.p, nil
	}
	cfg := w.a.config(w.layout, "", amqpQueue{})
	// One publisher serves every stream: the exchange is named from the topic.
	cfg.Exchange.GenerateName = AMQPExchange
	p, err := wmamqp.NewPublisher(cfg, w.logger)
	if err != nil {
		return nil, fmt.Errorf("error connecting to amqp broker: %w", err)
	}
	w.p = p
	return p, nil
}

func (w *amqpWriter) write(stream string, wire ...*message.Message) error {
	p, err := w.publisher()
	if err != nil {
		return err
	}
	return p.Publish(stream, wire...)
}

func (w *amqpWriter) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.p == nil {
		return nil
	}
	return w.p.Close()
}

// amqpMarshaler maps wire messages onto AMQP messages and back. Unmarshal
// never fails: an undecodable message becomes one marked as poison (see
// decodeEntry), which watermill-amqp would otherwise nack and requeue for
// ever.
type amqpMarshaler struct{}

func (amqpMarshaler) Marshal(wire *message.Message) (amqp.Publishing, error) {
	fields, err := entryFields(wire)
	if err != nil {
		return amqp.Publishing{}, err
	}
	headers := amqp.Table{wmamqp.DefaultMessageUUIDHeaderKey: wire.UUID}
	if md, ok := fields[fieldMetadata]; ok {
		headers[fieldMetadata] = md
	}
	return amqp.Publishing{
		Headers:      headers,
		ContentType:  "application/json",
		DeliveryMode: amqp.Persistent,
		MessageId:    wire.UUID,
		Body:         wire.Payload,
	}, nil
}

func (amqpMarshaler) Unmarshal(d amqp.Delivery) (*message.Message, error) {
	if d.Acknowledger == nil {
		// watermill-amqp reads the zero Delivery of a closed deliveries
		// channel (the broker cancelled the consumer, or the channel
		// closed); failing here makes it consume again instead of
		// handing out an empty message.
		return nil, errors.New("amqp consumer ended")
	}
	return decodeEntry(amqpEntry(d.Body, d.Headers)), nil
}

// amqpEntry returns the entry fields of an AMQP message: its body as
// "message" (absent when empty) and every header but the event id's.
func amqpEntry(body []byte, headers amqp.Table) map[string]any {
	fields := make(map[string]any, len(headers)+1)
	for k, v := range headers {
		if k != wmamqp.DefaultMessageUUIDHeaderKey {
			fields[k] = v
		}
	}
	if len(body) > 0 {
		fields[fieldMessage] = body
	}
	return fields
}

func (a *AMQP) newReader(layout Layout, logger watermill.LoggerAdapter) (reader, error) {
	return &amqpReader{a: a, layout: layout, logger: logger}, nil
}

// amqpReader reads with one watermill-amqp Subscriber per read, all on one
// connection opened by the first read.
type amqpReader struct {
	a      *AMQP
	layout Layout
	logger watermill.LoggerAdapter
	wg     sync.WaitGroup

	mu   sync.Mutex
	conn *wmamqp.ConnectionWrapper
}

func (r *amqpReader) connection() (*wmamqp.ConnectionWrapper, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.conn != nil {
		return r.conn, nil
	}
	cfg := r.a.config(r.layout, "", amqpQueue{})
	conn, err := wmamqp.NewConnection(cfg.Connection, r.logger)
	if err != nil {
		return nil, fmt.Errorf("error connecting to amqp broker: %w", err)
	}
	r.conn = conn
	return conn, nil
}

// read declares the exchange and the queue (see AMQP) and binds them
// before it returns.
func (r *amqpReader) read(ctx context.Context, stream string, spec readSpec) (<-chan *message.Message, error) {
	q := amqpQueue{name: AMQPExchange(stream) + ".b." + watermill.NewShortUUID()}
	if spec.group != "" {
		q = amqpQueue{name: AMQPExchange(stream) + ".g." + brokerName(spec.group, amqpNameByte, 200), durable: true}
	} else if spec.oldest {
		return nil, fmt.Errorf("broadcast from the oldest message: %w", ErrNoReplay)
	}
	conn, err := r.connection()
	if err != nil {
		return nil, err
	}
	if spec.group != "" && spec.oldest {
		if err := r.a.withChannel(ctx, func(ch *amqp.Channel) error {
			_, err := ch.QueueDeclarePassive(q.name, true, false, false, false, nil)
			return err
		}); err != nil {
			var aerr *amqp.Error
			if errors.As(err, &aerr) && aerr.Code == amqp.NotFound {
				return nil, fmt.Errorf("new group %q from the oldest message (declare it first with DeclareGroup): %w", spec.group, ErrNoReplay)
			}
			return nil, fmt.Errorf("error looking up group queue %s: %w", q.name, err)
		}
	}
	sub, err := wmamqp.NewSubscriberWithConnection(r.a.config(r.layout, stream, q), r.logger, conn)
	if err != nil {
		return nil, fmt.Errorf("error creating amqp subscriber: %w", err)
	}
	in, err := sub.Subscribe(ctx, stream)
	if err != nil {
		_ = sub.Close()
		return nil, fmt.Errorf("error subscribing to %s: %w", AMQPExchange(stream), err)
	}
	out := make(chan *message.Message)
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer close(out)
		// Closing the watermill-amqp Subscriber nacks (requeues) a message
		// handed out but not acked, and ends its consuming loop.
		defer func() { _ = sub.Close() }()
		for {
			select {
			case msg, ok := <-in:
				if !ok {
					return
				}
				select {
				case out <- msg:
				case <-ctx.Done():
					return
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}

// Close waits for the reads (whose ctx must be done) and closes the
// connection.
func (r *amqpReader) Close() error {
	r.wg.Wait()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.conn == nil {
		return nil
	}
	return r.conn.Close()
}
