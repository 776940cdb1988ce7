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

	"github.com/nvent/nvent/internal/domain"
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
	r, err := router.New(router.Config{PoisonTopic: "poison:test", RetryInterval: time.Millisecond}, poisonPubSub, []router.Wiring{w}, slog.New(slog.DiscardHandler), router.NewLifecycle())
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
	r, err := router.New(router.Config{RetryInterval: time.Millisecond}, failingPublisher{}, []router.Wiring{w}, slog.New(slog.DiscardHandler), router.NewLifecycle())
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

// flaky fails as unavailable until it is told the stream is back.
type flaky struct {
	sub      message.Subscriber
	attempts chan struct{}
	up       chan struct{}
	seen     chan string
}

func (f *flaky) Name() string { return "flaky" }

func (f *flaky) Register(r *message.Router) error {
	r.AddConsumerHandler("flaky", "in", f.sub, func(msg *message.Message) error {
		select {
		case <-f.up:
			f.seen <- string(msg.Payload)
			return nil
		default:
			select {
			case f.attempts <- struct{}{}:
			default:
			}
			return domain.Wrap(domain.CodeUnavailable, errors.New("connection refused"), "stream unavailable")
		}
	})
	return nil
}

func TestAnUnavailableStreamIsWaitedForNotPoisoned(t *testing.T) {
	pubsub := gochannel.NewGoChannel(gochannel.Config{BlockPublishUntilSubscriberAck: true}, watermill.NopLogger{})
	defer pubsub.Close()
	poisonPubSub := gochannel.NewGoChannel(gochannel.Config{OutputChannelBuffer: 10}, watermill.NopLogger{})
	defer poisonPubSub.Close()
	poison, err := poisonPubSub.Subscribe(context.Background(), "poison:test")
	if err != nil {
		t.Fatal(err)
	}
	f := &flaky{sub: pubsub, attempts: make(chan struct{}, 1), up: make(chan struct{}), seen: make(chan string, 1)}
	r, err := router.New(router.Config{PoisonTopic: "poison:test", RetryInterval: time.Millisecond}, poisonPubSub, []router.Wiring{f}, slog.New(slog.DiscardHandler), router.NewLifecycle())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() { cancel(); <-done }()
	<-r.Running()
	go func() { _ = pubsub.Publish("in", message.NewMessage("m1", []byte("m1"))) }()
	// Many more attempts than the retry budget: the message is nacked and
	// comes again instead of being set aside.
	for range 20 {
		select {
		case <-f.attempts:
		case <-time.After(10 * time.Second):
			t.Fatal("the message stopped being retried while the stream was down")
		}
	}
	close(f.up)
	select {
	case got := <-f.seen:
		if got != "m1" {
			t.Fatalf("handled %q", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the message was not delivered once the stream came back")
	}
	select {
	case m := <-poison:
		t.Fatalf("a message that failed only because the stream was down went to poison: %s", m.Payload)
	default:
	}
}
