package stream

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// Watermill's pubsub/tests suite multiplies subscribers through an
		// internal helper whose forwarding goroutines block for good on an
		// unread channel once the test stops reading (every multiplied
		// subscriber receives every message, the test reads each once).
		// They hold no resource of ours: our subscribers are closed.
		goleak.IgnoreAnyFunction("github.com/ThreeDotsLabs/watermill/internal/subscriber.(*multiplier).Subscribe.func2"),
		goleak.IgnoreAnyFunction("github.com/ThreeDotsLabs/watermill/internal/subscriber.(*multiplier).Subscribe.func3"),
	)
}
