package stream

import (
	"bytes"
	"encoding/json"
	"errors"
	"maps"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

// Stream entries come from outside nvent as well: anyone who can write to
// the Redis stream (or NATS subject, AMQP queue, Postgres table) can put any
// fields there. These fuzz targets hold the decoders to their promises for
// every input: no panic; what decodeEntry does not mark as poison, every
// consumer can read (FromWatermill) and write on (Encode, encodeEntry)
// without loss; and what it marks as poison keeps the raw entry.
//
// Regressions found by fuzzing are the testdata/fuzz/*/regression-* files:
// a zero timestamp (as "0001-01-01T00:00:00Z" or -62135596800000 ms) and
// one past the year 9999 (253402300800000 ms from another producer) are
// accepted by Decode and delivered unmarked by decodeEntry, yet Encode
// refuses the first and FromWatermill the second.

// FuzzDecode feeds arbitrary bytes to Decode: it fails only with a
// *DecodeError, and a Message it returns encodes again and decodes to
// itself.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`{"type":"store.append","topic":"store-sync:append:orders","data":{"subject":"orders"},"timestamp":"2025-01-02T03:04:05.678Z","instanceId":"i","eventId":"e"}`,
		`{"topic":"a:b","eventId":"e","timestamp":1735689600123}`,
		`{"topic":"a:*","eventId":"e","timestamp":"2025-01-01T00:00:00Z"}`,
		`{"topic":":a","eventId":"e","timestamp":"2025-01-01T00:00:00Z"}`,
		`{"topic":"a","eventId":"e","timestamp":"9999-12-31T23:59:59.999+14:00"}`,
		`{"topic":"a","eventId":"e","timestamp":"2025-01-01T00:00:00Z","data":"\u0000\ud800"}`,
		`[]`, `null`, `{"topic":`, "\xff\xfe",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Decode(b)
		if err != nil {
			var de *DecodeError
			if !errors.As(err, &de) {
				t.Fatalf("Decode(%q) failed with %T %v, not a *DecodeError", b, err, err)
			}
			return
		}
		if m.Topic == "" || m.EventID == "" || !json.Valid(m.Data) {
			t.Fatalf("Decode(%q) = %+v: no topic, no eventId or data that is not JSON", b, m)
		}
		enc, err := Encode(m)
		if err != nil {
			t.Fatalf("Decode(%q) = %+v, which Encode refuses: %v", b, m, err)
		}
		back, err := Decode(enc)
		if err != nil {
			t.Fatalf("Encode(Decode(%q)) = %s, which Decode refuses: %v", b, enc, err)
		}
		if back.Topic != m.Topic || back.EventID != m.EventID || back.Type != m.Type || back.InstanceID != m.InstanceID ||
			!back.Timestamp.Equal(m.Timestamp.Truncate(time.Millisecond)) || !jsonEqual(back.Data, m.Data) {
			t.Fatalf("Decode(Encode(Decode(%q))) = %+v, want %+v", b, back, m)
		}
	})
}

// FuzzDecodeEntry feeds arbitrary stream entry fields to decodeEntry (the
// one decoder every backend's subscriber uses).
func FuzzDecodeEntry(f *testing.F) {
	valid := `{"type":"flow.start","topic":"flow:event:r1","data":{"runId":"r1"},"timestamp":"2025-01-02T03:04:05.678Z","instanceId":"i","eventId":"e1"}`
	for _, s := range [][3]string{
		{valid, "", ""},
		{valid, `{"correlation_id":"c1","_nvent_evil":"x"}`, ""},
		{`{"topic":"client:ui:runs","eventId":"e","timestamp":"2025-01-01T00:00:00Z","data":"aGk="}`, `{"_nvent_payload":"base64"}`, ""},
		{`{"topic":"client:ui:runs","eventId":"e","timestamp":"2025-01-01T00:00:00Z","data":"hi"}`, `{"_nvent_payload":"text"}`, ""},
		{`{"topic":"client:ui:runs","eventId":"e","timestamp":"2025-01-01T00:00:00Z","data":null}`, `{"_nvent_payload":"empty"}`, ""},
		{`{"topic":"a","eventId":"e","timestamp":1}`, `{"_nvent_payload":"zip"}`, ""},
		{valid, `[`, ""},
		{valid, `{"a":1}`, ""},
		{`{"topic":"a","eventId":"e","timestamp":"2025-01-01T00:00:00Z"}`, "", "extra field"},
		{"", "", ""},
	} {
		f.Add(s[0], s[1], s[2])
	}
	f.Fuzz(func(t *testing.T, body, metadata, other string) {
		fields := map[string]any{}
		if body != "" {
			fields[fieldMessage] = body
		}
		if metadata != "" {
			fields[fieldMetadata] = metadata
		}
		if other != "" {
			fields["other"] = []byte(other)
		}
		msg := decodeEntry(fields)
		if msg == nil {
			t.Fatal("decodeEntry returned nil")
		}
		if reason := msg.Metadata.Get(metadataPoison); reason != "" {
			var raw map[string]string
			if err := json.Unmarshal(msg.Payload, &raw); err != nil || len(raw) != len(fields) {
				t.Fatalf("poison (%s) payload %q does not hold the %d raw fields: %v", reason, msg.Payload, len(fields), err)
			}
			return
		}
		for k := range msg.Metadata {
			if len(k) >= len(reservedPrefix) && k[:len(reservedPrefix)] == reservedPrefix {
				t.Fatalf("delivered message carries reserved metadata %q", k)
			}
		}
		m, err := FromWatermill(msg)
		if err != nil {
			t.Fatalf("decodeEntry(%q) delivered a message that FromWatermill refuses: %v (metadata %v)", fields, err, msg.Metadata)
		}
		if _, err := Encode(m); err != nil {
			t.Fatalf("decodeEntry(%q) delivered %+v, which Encode refuses: %v", fields, m, err)
		}
		// Published again (a consumer forwarding it), it arrives the same.
		wire, err := encodeEntry(m.Topic, msg, "inst", time.Now())
		if err != nil {
			t.Fatalf("decodeEntry(%q) delivered a message that encodeEntry refuses: %v", fields, err)
		}
		again, err := entryFields(wire)
		if err != nil {
			t.Fatal(err)
		}
		out := decodeEntry(again)
		if reason := out.Metadata.Get(metadataPoison); reason != "" {
			t.Fatalf("re-encoded %q is poison: %s", again, reason)
		}
		want := maps.Clone(msg.Metadata)
		want[MetadataInstanceID] = "inst"
		if out.UUID != msg.UUID || !bytes.Equal(out.Payload, msg.Payload) || !maps.Equal(out.Metadata, want) {
			t.Fatalf("round trip of %q:\n got %s %q %v\nwant %s %q %v", fields, out.UUID, out.Payload, out.Metadata, msg.UUID, msg.Payload, want)
		}
	})
}

// FuzzFromWatermill feeds arbitrary messages, as a backend that carries
// Watermill metadata itself would deliver them, to FromWatermill: a
// Message it accepts can be encoded for SSE, WebSocket and `nvent tail`.
func FuzzFromWatermill(f *testing.F) {
	f.Add("e1", []byte(`{"a":1}`), "client:ui:runs", "run.status", "2025-01-02T03:04:05.678Z", "i")
	f.Add("e1", []byte{0xff, 0}, "a", "", "2025-01-02T03:04:05Z", "")
	f.Add("", []byte(nil), "a:*", "t", "yesterday", "i")
	f.Add("e1", []byte("x"), ":a", "t", "0001-01-01T00:00:00Z", "i")
	f.Fuzz(func(t *testing.T, uuid string, payload []byte, topic, typ, ts, instance string) {
		if uuid == "" {
			return // subscribers deliver the entry's eventId, which Decode requires
		}
		msg := message.NewMessage(uuid, payload)
		msg.Metadata.Set(MetadataTopic, topic)
		msg.Metadata.Set(MetadataType, typ)
		msg.Metadata.Set(MetadataTimestamp, ts)
		msg.Metadata.Set(MetadataInstanceID, instance)
		m, err := FromWatermill(msg)
		if err != nil {
			return
		}
		if !json.Valid(m.Data) {
			t.Fatalf("FromWatermill gave data %q that is not JSON", m.Data)
		}
		if _, err := Encode(m); err != nil {
			t.Fatalf("FromWatermill accepted %+v, which Encode refuses: %v", m, err)
		}
	})
}

// FuzzValidateTopic: a topic that ValidateTopic accepts has a physical
// stream and matches itself as a pattern; one it refuses is an
// invalid_input error.
func FuzzValidateTopic(f *testing.F) {
	for _, s := range []string{"store-sync:append:orders", "client:flow:r1", "a", "", ":a", "a:*", "*", "a::b", "\x00", "é:ü"} {
		f.Add(s)
	}
	l := Layout{}
	l.setDefaults()
	f.Fuzz(func(t *testing.T, topic string) {
		err := ValidateTopic(topic)
		if err != nil {
			if _, serr := l.StreamFor(topic); serr == nil {
				t.Fatalf("StreamFor(%q) accepted a topic ValidateTopic refuses (%v)", topic, err)
			}
			return
		}
		stream, err := l.StreamFor(topic)
		if err != nil || stream == "" {
			t.Fatalf("StreamFor(%q) = %q, %v for a valid topic", topic, stream, err)
		}
		if !Match(topic, topic) {
			t.Fatalf("topic %q does not match itself", topic)
		}
	})
}

func jsonEqual(a, b json.RawMessage) bool {
	var x, y bytes.Buffer
	return json.Compact(&x, a) == nil && json.Compact(&y, b) == nil && bytes.Equal(x.Bytes(), y.Bytes())
}
