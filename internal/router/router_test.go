package router_test

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"go.uber.org/goleak"

	"github.com/nvent/nvent/internal/router"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// picky fails on "bad", panics on "boom" and passes everything else on.
type picky struct {
	sub  message.Subscriber
	seen chan string
}

func (p *picky) Name() string { return "picky" }

func (p *picky) Register(r *message.Router) error {
	r.AddConsumerHandler("picky", "in", p.sub, func(msg *message.Message) error {
		switch string(msg.Payload) {
		case "bad":
			return errors.New("cannot digest bad")
		case "boom":
			panic("boom")
		}
		p.seen <- string(msg.Payload)
		return nil
	})
	return nil
}

func TestAFailingMessageGoesToPoisonAndTheRestFlow(t *testing.T) {
	pubsub := gochannel.NewGoChannel(gochannel.Config{BlockPublishUntilSubscriberAck: true}, watermill.NopLogger{})
	defer pubsub.Close()
	poisonPubSub := gochannel.NewGoChannel(gochannel.Config{OutputChannelBuffer: 10}, watermill.NopLogger{})
	defer poisonPubSub.Close()
	poison, err := poisonPubSub.Subscribe(context.Background(), "poison:test")
	if err != nil {
		t.Fatal(err)
	}
	w := &picky{sub: pubsub, seen: make(chan string, 10)}
	r, err := router.New(router.Config{PoisonTopic: "poison:test", RetryInterval: time.Millisecond}, poisonPubSub, []router.Wiring{w}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("router: %v", err)
		}
	}()
	<-r.Running()

	for _, p := range []string{"bad", "boom", "good"} {
		if err := pubsub.Publish("in", message.NewMessage(p, []byte(p))); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case got := <-w.seen:
		if got != "good" {
			t.Fatalf("handler saw %q", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the message after the failing ones was never handled")
	}
	for _, want := range []string{"bad", "boom"} {
		select {
		case m := <-poison:
			m.Ack()
			if string(m.Payload) != want || m.Metadata.Get(middleware.ReasonForPoisonedKey) == "" || m.Metadata.Get(middleware.PoisonedTopicKey) != "in" {
				t.Fatalf("poison got %q with metadata %v, want %q with a reason and its topic", m.Payload, m.Metadata, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%q never reached the poison topic", want)
		}
	}
}

// failingPublisher stands for a stream that is down.
type failingPublisher struct{}

func (failingPublisher) Publish(string, ...*message.Message) error { return errors.New("stream down") }
func (failingPublisher) Close() error                              { return nil }

func TestAPoisonTopicThatIsDownDoesNotBlock(t *testing.T) {
	pubsub := gochannel.NewGoChannel(gochannel.Config{BlockPublishUntilSubscriberAck: true}, watermill.NopLogger{})
	defer pubsub.Close()
	w := &picky{sub: pubsub, seen: make(chan string, 10)}
	r, err := router.New(router.Config{RetryInterval: time.Millisecond}, failingPublisher{}, []router.Wiring{w}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() { cancel(); <-done }()
	<-r.Running()
	published := make(chan error, 1)
	go func() {
		for _, p := range []string{"bad", "good"} {
			if err := pubsub.Publish("in", message.NewMessage(p, []byte(p))); err != nil {
				published <- err
				return
			}
		}
		published <- nil
	}()
	select {
	case got := <-w.seen:
		if got != "good" {
			t.Fatalf("handler saw %q", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a failing message with nowhere to go blocked the next one")
	}
	if err := <-published; err != nil {
		t.Fatal(err)
	}
}
