// Package handlers holds nvent's wirings: sets of router handlers, each with
// one job. The StreamCoordinator routes store changes from the bus onto the
// stream's three channels; the others consume the stream.
//
// Adding a wiring is one new file here (a type with Name and Register) and
// one line in ProviderSet.
package handlers

import (
	"cmp"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/nvent/nvent/internal/bus"
	"github.com/nvent/nvent/internal/domain"
	"github.com/nvent/nvent/internal/stream"
)

// Channels says which of the three channels are on (the seed's
// enableStoreSync, enableFlowEvents, enableClientMessages).
type Channels struct {
	StoreSync      bool
	FlowEvents     bool
	ClientMessages bool
}

// StreamCoordinator is the wiring that routes every store change from the
// bus to the stream, on each enabled channel:
//
//   - store-sync: every change → store-sync:append:{subject},
//     store-sync:save:{collection}:{id}, store-sync:delete:{collection}:{id},
//     store-sync:kv:{key};
//   - flow-events: flow and step lifecycle events of a run (flow.*, step.*,
//     emit, await.*) → flow:event:{runId}; flow.trigger → flow:trigger:{flowName};
//   - client-messages: every event of a run → client:flow:{runId}.
//
// The change's correlation id travels on as the stream message's metadata
// (bus.MetadataCorrelationID).
//
// The handler acknowledges a bus message once its publishes returned. Given
// a plain stream.Publisher, that is after the stream stored them; given a
// stream.Batch (as `nvent serve` does), after they were queued, and the
// producer of the bus messages makes them durable with bus.Flush before it
// counts them as delivered (the relay checkpoints only then). A publish
// that fails is an unavailable stream: the router retries the message until
// the stream takes it (so the relay, whose bus publish waits for that,
// stops and resumes without losing anything); a message that cannot be
// published at all (an invalid topic) is poison. Each stream message's
// event id is the change id, for deduplication downstream.
type StreamCoordinator struct {
	channels  Channels
	bus       message.Subscriber
	stream    message.Publisher
	published func(channel string, err error)
}

// ObservePublishes makes the coordinator report every stream publish (its
// channel, and the error if it failed) to f.
func (c *StreamCoordinator) ObservePublishes(f func(channel string, err error)) { c.published = f }

// NewStreamCoordinator returns the coordinator over the bus subscriber and
// the stream publisher.
func NewStreamCoordinator(ch Channels, busSub message.Subscriber, pub message.Publisher) *StreamCoordinator {
	return &StreamCoordinator{channels: ch, bus: busSub, stream: pub, published: func(string, error) {}}
}

// Name implements router.Wiring.
func (c *StreamCoordinator) Name() string { return "stream-coordinator" }

// Register implements router.Wiring: it adds one handler, "stream-coordinator",
// that routes each change to every enabled channel, and none when every
// channel is off. One handler rather than one per channel: the change is
// decoded once, and the bus starts one goroutine per message, not three.
func (c *StreamCoordinator) Register(r *message.Router) error {
	var routes []route
	for _, rt := range []struct {
		on bool
		route
	}{
		{c.channels.StoreSync, route{"store-sync", storeSyncMessages}},
		{c.channels.FlowEvents, route{"flow-events", flowEventMessages}},
		{c.channels.ClientMessages, route{"client-messages", clientMessages}},
	} {
		if rt.on {
			routes = append(routes, rt.route)
		}
	}
	if len(routes) > 0 {
		r.AddConsumerHandler(c.Name(), bus.Topic, c.bus, c.handle(routes))
	}
	return nil
}

// route makes a channel's stream messages out of a change.
type route struct {
	channel string
	fn      func(bus.Change) []outgoing
}

// outgoing is one stream message to publish.
type outgoing struct {
	topic string
	msg   stream.Message
}

// handle decodes a change and publishes what each route makes of it. A
// message whose topic is invalid cannot be published at all: the others are
// published, then the change is reported as poison.
func (c *StreamCoordinator) handle(routes []route) message.NoPublishHandlerFunc {
	return func(msg *message.Message) error {
		ch, err := bus.Decode(msg)
		if err != nil {
			return err
		}
		var invalid error
		for _, rt := range routes {
			for _, o := range rt.fn(ch) {
				if err := stream.ValidateTopic(o.topic); err != nil {
					invalid = cmp.Or(invalid, err)
					continue
				}
				out := stream.NewWatermillMessage(o.msg)
				if id := msg.Metadata.Get(bus.MetadataCorrelationID); id != "" {
					out.Metadata.Set(bus.MetadataCorrelationID, id)
				}
				err := c.stream.Publish(o.topic, out)
				c.published(rt.channel, err)
				if err != nil {
					// The stream, not the message, is at fault: the message
					// is retried until the stream takes it, never set aside.
					return domain.Wrap(domain.CodeUnavailable, err, fmt.Sprintf("error publishing %s on %s", o.msg.EventID, o.topic))
				}
			}
		}
		return invalid
	}
}

// withEvent renders {"event":E,k1:v1,…} for the string fields kv (key,
// value, key, value, …), which must come in key order after "event" — the
// bytes json.Marshal gives for the same map, without marshalling the event
// twice (encoding/json re-validates and compacts a MarshalJSON's output).
func withEvent(e *domain.Event, kv ...string) json.RawMessage {
	ev, err := e.MarshalJSON()
	if err != nil {
		panic(fmt.Sprintf("handlers: encoding event %s: %v", e.ID, err)) // only our own types are encoded
	}
	b := make([]byte, 0, len(ev)+64)
	b = append(b, `{"event":`...)
	b = append(b, ev...)
	for i := 0; i+1 < len(kv); i += 2 {
		b = append(b, ',')
		b = append(b, mustJSON(kv[i])...)
		b = append(b, ':')
		b = append(b, mustJSON(kv[i+1])...)
	}
	return append(b, '}')
}

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("handlers: encoding %T: %v", v, err)) // only our own types are encoded
	}
	return b
}

// storeSyncMessages returns the store-sync messages of a change.
func storeSyncMessages(c bus.Change) []outgoing {
	base := stream.Message{EventID: c.ID, Timestamp: c.At}
	switch c.Kind {
	case bus.KindAppend:
		base.Type = "store.append"
		base.Data = withEvent(c.Event, "subject", c.Event.Subject)
		return []outgoing{{"store-sync:append:" + c.Event.Subject, base}}
	case bus.KindSave:
		base.Type = "store.save"
		base.Data = mustJSON(map[string]any{"collection": c.Collection, "id": c.DocumentID, "version": c.Document.Version, "document": c.Document})
		return []outgoing{{"store-sync:save:" + c.Collection + ":" + c.DocumentID, base}}
	case bus.KindDelete:
		base.Type = "store.delete"
		base.Data = mustJSON(map[string]any{"collection": c.Collection, "id": c.DocumentID})
		return []outgoing{{"store-sync:delete:" + c.Collection + ":" + c.DocumentID, base}}
	case bus.KindKeySet:
		base.Type = "store.kv"
		base.Data = mustJSON(map[string]any{"key": c.Key, "op": "set", "entry": c.Entry})
		return []outgoing{{"store-sync:kv:" + c.Key, base}}
	case bus.KindKeyDelete:
		base.Type = "store.kv"
		base.Data = mustJSON(map[string]any{"key": c.Key, "op": "delete"})
		return []outgoing{{"store-sync:kv:" + c.Key, base}}
	}
	return nil
}

// IsFlowLifecycle reports whether an event type is a flow or step lifecycle
// event that drives orchestration: flow.*, step.*, emit, await.*.
func IsFlowLifecycle(typ string) bool {
	return strings.HasPrefix(typ, "flow.") || strings.HasPrefix(typ, "step.") ||
		strings.HasPrefix(typ, "await.") || typ == "emit" || strings.HasPrefix(typ, "emit.")
}

// TriggerType is the type of an event that asks for a flow to start.
const TriggerType = "flow.trigger"

// flowEventMessages returns the flow-events messages of a change: lifecycle
// events of a run on flow:event:{runId}, and trigger requests on
// flow:trigger:{flowName}.
func flowEventMessages(c bus.Change) []outgoing {
	if c.Kind != bus.KindAppend {
		return nil
	}
	e := c.Event
	switch {
	case e.Type == TriggerType && e.FlowName != "":
		return []outgoing{{"flow:trigger:" + e.FlowName, stream.Message{
			Type: e.Type, EventID: c.ID, Timestamp: c.At,
			Data: withEvent(e, "flowName", e.FlowName, "runId", e.RunID),
		}}}
	case e.RunID != "" && IsFlowLifecycle(e.Type):
		return []outgoing{{"flow:event:" + e.RunID, stream.Message{
			Type: e.Type, EventID: c.ID, Timestamp: c.At,
			Data: withEvent(e, "runId", e.RunID),
		}}}
	}
	return nil
}

// clientMessages returns the client-messages message of a change: every
// event of a run on client:flow:{runId}.
func clientMessages(c bus.Change) []outgoing {
	if c.Kind != bus.KindAppend || c.Event.RunID == "" {
		return nil
	}
	return []outgoing{{"client:flow:" + c.Event.RunID, stream.Message{
		Type: "flow.event", EventID: c.ID, Timestamp: c.At,
		Data: withEvent(c.Event, "runId", c.Event.RunID),
	}}}
}
