package handlers

import (
	"encoding/json"
	"testing"

	"github.com/nvent/nvent/internal/bus"
	"github.com/nvent/nvent/internal/domain"
	"github.com/nvent/nvent/internal/stream"
)

// BenchmarkStoreSyncMessage is the coordinator's store-sync work per append
// (after the change is decoded): the message's data, then the stream
// message as the Publisher encodes it.
func BenchmarkStoreSyncMessage(b *testing.B) {
	e := domain.Event{ID: domain.NewID(), Subject: "bench:7", Seq: 42, Type: "bench.tick",
		Data: json.RawMessage(`{"writer":3,"n":42,"note":"nvent bench payload, about the size of a small domain event"}`), TS: domain.Now()}
	c := bus.Change{Kind: bus.KindAppend, ID: e.ID, Event: &e, At: e.TS}
	b.ReportAllocs()
	for b.Loop() {
		for _, o := range storeSyncMessages(c) {
			o.msg.Topic, o.msg.InstanceID = o.topic, "bench"
			if _, err := stream.Encode(o.msg); err != nil {
				b.Fatal(err)
			}
		}
	}
}
