package stream

import (
	"context"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

// TestBatchWritesOnFlushInOrder: a Batch writes nothing until Flush (or its
// limit), then everything in the order published, across channels; a
// failed write keeps the queue.
func TestBatchWritesOnFlushInOrder(t *testing.T) {
	forEachBackend(t, func(t *testing.T, kind string) {
		{
			e := newEnv(t, kind)
			layout := e.layout
			st := e.instance(t, "writer", opts{})
			pub, err := st.NewPublisher()
			if err != nil {
				t.Fatal(err)
			}
			got := subscribe(t, newTestSubscriber(t, st, Broadcast()), "*")
			ctx := context.Background()

			b := NewBatch(pub, 5)
			topics := []string{"store-sync:append:a", "flow:event:r1", "store-sync:append:a", "client:flow:r1"}
			for i, topic := range topics {
				if err := b.Publish(topic, message.NewMessage(topic+"#"+string(rune('0'+i)), []byte(`{}`))); err != nil {
					t.Fatal(err)
				}
			}
			if err := b.Publish("store-sync:*", message.NewMessage("p", []byte(`{}`))); err == nil {
				t.Fatal("a pattern was queued as a topic")
			}
			if n := b.Pending(); n != len(topics) {
				t.Fatalf("pending %d, want %d", n, len(topics))
			}
			// Nothing was written: a message published directly after the
			// queued ones is the first to arrive.
			if err := pub.Publish("store-sync:append:z", message.NewMessage("direct", []byte(`{}`))); err != nil {
				t.Fatal(err)
			}
			if first := next(t, got); first.UUID != "direct" {
				t.Fatalf("first message %s: the batch was written before Flush", first.UUID)
			}
			if err := b.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			if b.Pending() != 0 {
				t.Fatalf("pending %d after Flush", b.Pending())
			}
			// Per physical stream, the order published.
			perStream := map[string][]string{}
			for range topics {
				msg, err := FromWatermill(next(t, got))
				if err != nil {
					t.Fatal(err)
				}
				s, _ := layout.StreamFor(msg.Topic)
				perStream[s] = append(perStream[s], msg.EventID)
			}
			want := map[string][]string{}
			for i, topic := range topics {
				s, _ := layout.StreamFor(topic)
				want[s] = append(want[s], topic+"#"+string(rune('0'+i)))
			}
			for s, ids := range want {
				if len(perStream[s]) != len(ids) {
					t.Fatalf("stream %s got %v, want %v", s, perStream[s], ids)
				}
				for i := range ids {
					if perStream[s][i] != ids[i] {
						t.Fatalf("stream %s got %v, want %v", s, perStream[s], ids)
					}
				}
			}

			// The limit writes without Flush.
			for i := range 5 {
				if err := b.Publish("store-sync:append:b", message.NewMessage("limit-"+string(rune('0'+i)), []byte(`{}`))); err != nil {
					t.Fatal(err)
				}
			}
			if b.Pending() != 0 {
				t.Fatalf("pending %d at the limit", b.Pending())
			}
			for i := range 5 {
				if m := next(t, got); m.UUID != "limit-"+string(rune('0'+i)) {
					t.Fatalf("got %s at %d", m.UUID, i)
				}
			}

			// A write that fails keeps the queue.
			if err := b.Publish("store-sync:append:c", message.NewMessage("kept", []byte(`{}`))); err != nil {
				t.Fatal(err)
			}
			if err := pub.Close(); err != nil {
				t.Fatal(err)
			}
			if err := b.Flush(ctx); err == nil {
				t.Fatal("Flush on a closed publisher succeeded")
			}
			if b.Pending() != 1 {
				t.Fatalf("pending %d after a failed Flush, want 1", b.Pending())
			}
			// At the limit, a Publish whose write fails returns the error
			// and does not queue its own messages (its caller retries).
			for i := range 3 {
				if err := b.Publish("store-sync:append:c", message.NewMessage("fill-"+string(rune('0'+i)), []byte(`{}`))); err != nil {
					t.Fatal(err)
				}
			}
			for range 3 {
				if err := b.Publish("store-sync:append:c", message.NewMessage("over", []byte(`{}`))); err == nil {
					t.Fatal("a Publish at the limit succeeded on a closed publisher")
				}
				if b.Pending() != 4 {
					t.Fatalf("pending %d after a failed Publish at the limit, want 4", b.Pending())
				}
			}
		}
	})
}

func next(t *testing.T, ch <-chan *message.Message) *message.Message {
	t.Helper()
	select {
	case m, ok := <-ch:
		if !ok {
			t.Fatal("subscription closed")
		}
		m.Ack()
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no message within 10s")
	}
	return nil
}
