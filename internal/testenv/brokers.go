package testenv

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	amqp "github.com/rabbitmq/amqp091-go"
)

// DefaultNATSURL and DefaultAMQPURL are the local brokers the tests use
// unless NVENT_TEST_NATS_URL / NVENT_TEST_AMQP_URL say otherwise.
const (
	DefaultNATSURL = "nats://127.0.0.1:4222"
	DefaultAMQPURL = "amqp://guest:guest@127.0.0.1:5672/"
)

// NATSURL returns the test NATS URL after checking that the server answers
// JetStream requests; the test fails, and stops, if it does not.
func NATSURL(t testing.TB) string {
	t.Helper()
	url := os.Getenv("NVENT_TEST_NATS_URL")
	if url == "" {
		url = DefaultNATSURL
	}
	conn, err := nats.Connect(url, nats.Timeout(5*time.Second))
	if err != nil {
		t.Fatalf("NATS is not reachable at %s (set NVENT_TEST_NATS_URL, or run `make services`): %v", url, err)
	}
	defer conn.Close()
	js, err := jetstream.New(conn)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := js.AccountInfo(ctx); err != nil {
		t.Fatalf("NATS at %s does not answer JetStream requests (start nats-server with -js): %v", url, err)
	}
	return url
}

// AMQPURL returns the test AMQP (RabbitMQ) URL after checking that the
// broker accepts a connection; the test fails, and stops, if it does not.
func AMQPURL(t testing.TB) string {
	t.Helper()
	url := os.Getenv("NVENT_TEST_AMQP_URL")
	if url == "" {
		url = DefaultAMQPURL
	}
	conn, err := amqp.DialConfig(url, amqp.Config{Dial: amqp.DefaultDial(5 * time.Second)})
	if err != nil {
		t.Fatalf("RabbitMQ is not reachable at %s (set NVENT_TEST_AMQP_URL, or run `make services`): %v", url, err)
	}
	_ = conn.Close()
	return url
}
