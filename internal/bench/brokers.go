package bench

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nvent/nvent/internal/handlers"
	"github.com/nvent/nvent/internal/stream"
)

// cleanBrokers deletes, at cleanup, what a run left on a shared NATS or
// RabbitMQ server under its prefix: the JetStream streams (which keep every
// event on disk), and the RabbitMQ exchanges and the durable queues of the
// competing groups `nvent serve` runs. Broadcast queues go by themselves.
func (r *runner) cleanBrokers(st *stream.Stream) {
	layout := st.Layout()
	channels := append(layout.Channels, stream.PoisonChannel)
	switch b := st.Backend().(type) {
	case *stream.AMQP:
		r.onCleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			for _, g := range []struct{ group, pattern string }{
				{handlers.FlowRunsGroup, "flow:event:*"}, {handlers.WebhookGroup, "flow:event:*"}, {handlers.TriggersGroup, "flow:trigger:*"},
			} {
				if err := b.DeleteGroup(ctx, layout, g.group, g.pattern); err != nil {
					fmt.Fprintf(r.cfg.Log, "bench: error deleting RabbitMQ group %s: %v\n", g.group, err)
				}
			}
			if err := b.DeleteExchanges(ctx, layout, channels...); err != nil {
				fmt.Fprintf(r.cfg.Log, "bench: error deleting RabbitMQ exchanges: %v\n", err)
			}
		})
	case *stream.NATS:
		url := r.cfg.NATSURL
		r.onCleanup(func() {
			if err := deleteNATSStreams(url, layout.KeyPrefix); err != nil {
				fmt.Fprintf(r.cfg.Log, "bench: error deleting JetStream streams: %v\n", err)
			}
		})
	}
}

// deleteNATSStreams deletes the JetStream streams of the physical streams
// under prefix.
func deleteNATSStreams(url, prefix string) error {
	conn, err := nats.Connect(url, nats.Timeout(5*time.Second))
	if err != nil {
		return err
	}
	defer conn.Close()
	js, err := jetstream.New(conn)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	mine := stream.NATSStreamName(prefix)
	var names []string
	lister := js.StreamNames(ctx)
	for name := range lister.Name() {
		if strings.HasPrefix(name, mine) {
			names = append(names, name)
		}
	}
	if err := lister.Err(); err != nil {
		return err
	}
	for _, name := range names {
		if err := js.DeleteStream(ctx, name); err != nil {
			return err
		}
	}
	return nil
}
