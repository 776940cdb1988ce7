package stream_test

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nvent/nvent/internal/stream"
)

func Example() {
	st, err := stream.New(stream.Config{Backend: stream.BackendMemory, InstanceID: "node-1"}, nil)
	if err != nil {
		panic(err)
	}
	defer st.Close()

	sub, err := st.NewSubscriber(stream.Broadcast())
	if err != nil {
		panic(err)
	}
	defer sub.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	appends, err := sub.Subscribe(ctx, "store-sync:append:*")
	if err != nil {
		panic(err)
	}

	pub, err := st.NewPublisher()
	if err != nil {
		panic(err)
	}
	defer pub.Close()
	msg := stream.NewWatermillMessage(stream.Message{
		Type:      "store.append",
		Data:      json.RawMessage(`{"subject":"orders","event":{"seq":1}}`),
		Timestamp: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC),
		EventID:   "evt-1",
	})
	if err := pub.Publish("store-sync:append:orders", msg); err != nil {
		panic(err)
	}

	got := <-appends
	got.Ack()
	m, err := stream.FromWatermill(got)
	if err != nil {
		panic(err)
	}
	line, _ := stream.Encode(m)
	fmt.Println(string(line))
	// Output:
	// {"type":"store.append","topic":"store-sync:append:orders","data":{"subject":"orders","event":{"seq":1}},"timestamp":"2025-01-02T03:04:05.000Z","instanceId":"node-1","eventId":"evt-1"}
}
