package stream

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

func TestEncodeDecode(t *testing.T) {
	ts := time.Date(2025, 1, 2, 3, 4, 5, 678_900_000, time.FixedZone("x", 3600))
	m := Message{
		Type: "store.append", Topic: "store-sync:append:nq:flow:r1",
		Data:      json.RawMessage(`{ "subject": "nq:flow:r1", "html": "<b>" }`),
		Timestamp: ts, InstanceID: "i1", EventID: "e1",
	}
	b, err := Encode(m)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"type":"store.append","topic":"store-sync:append:nq:flow:r1","data":{"subject":"nq:flow:r1","html":"<b>"},"timestamp":"2025-01-02T02:04:05.678Z","instanceId":"i1","eventId":"e1"}`
	if string(b) != want {
		t.Fatalf("Encode:\n got %s\nwant %s", b, want)
	}
	got, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.Topic != m.Topic || got.EventID != "e1" || got.InstanceID != "i1" || got.Type != m.Type ||
		!got.Timestamp.Equal(ts.Truncate(time.Millisecond)) || string(got.Data) != `{"subject":"nq:flow:r1","html":"<b>"}` {
		t.Fatalf("Decode(Encode(m)) = %+v", got)
	}

	// json.Marshal goes through Encode (and escapes HTML again).
	b2, err := json.Marshal(struct{ M Message }{m})
	var back struct{ M Message }
	if err != nil || json.Unmarshal(b2, &back) != nil || back.M.EventID != "e1" || back.M.Topic != m.Topic {
		t.Fatalf("json.Marshal = %s, %v", b2, err)
	}
}

func TestDecodeErrors(t *testing.T) {
	cases := map[string]string{
		"invalid JSON":      `{"topic":`,
		"missing topic":     `{"eventId":"e","timestamp":"2025-01-01T00:00:00.000Z"}`,
		"invalid topic":     `{"topic":"a:*","eventId":"e","timestamp":"2025-01-01T00:00:00.000Z"}`,
		"missing eventId":   `{"topic":"a:b","timestamp":"2025-01-01T00:00:00.000Z"}`,
		"missing timestamp": `{"topic":"a:b","eventId":"e"}`,
		"invalid timestamp": `{"topic":"a:b","eventId":"e","timestamp":"yesterday"}`,
	}
	for reason, in := range cases {
		_, err := Decode([]byte(in))
		var de *DecodeError
		if !errors.As(err, &de) || de.Reason != reason {
			t.Errorf("Decode(%s) = %v, want a DecodeError %q", in, err, reason)
		}
	}
	// Other producers may send a number of milliseconds, and omit data.
	m, err := Decode([]byte(`{"topic":"a:b","eventId":"e","timestamp":1735689600123}`))
	if err != nil || !m.Timestamp.Equal(time.UnixMilli(1735689600123)) || string(m.Data) != "null" {
		t.Fatalf("Decode(numeric timestamp) = %+v, %v", m, err)
	}
}

func TestEncodeRejects(t *testing.T) {
	ok := Message{Topic: "a:b", EventID: "e", Timestamp: time.Now()}
	for name, m := range map[string]Message{
		"no topic":    {EventID: "e", Timestamp: time.Now()},
		"pattern":     {Topic: "a:*", EventID: "e", Timestamp: time.Now()},
		"no event id": {Topic: "a:b", Timestamp: time.Now()},
		"no time":     {Topic: "a:b", EventID: "e"},
		"bad data":    {Topic: "a:b", EventID: "e", Timestamp: time.Now(), Data: json.RawMessage("{")},
	} {
		if _, err := Encode(m); err == nil {
			t.Errorf("Encode(%s) succeeded", name)
		}
	}
	if b, err := Encode(ok); err != nil || !json.Valid(b) {
		t.Fatalf("Encode(%+v) = %s, %v", ok, b, err)
	}
}

// TestEntryRoundTrip checks that a Watermill message survives the wire form
// with its payload byte for byte, whatever the payload.
func TestEntryRoundTrip(t *testing.T) {
	now := time.Date(2025, 5, 6, 7, 8, 9, 0, time.UTC)
	for _, payload := range [][]byte{nil, []byte(`{"a":1}`), []byte("42"), []byte("x"), []byte("null"), {0xff, 0x00, 0xfe}} {
		in := message.NewMessage("id-1", payload)
		in.Metadata.Set("test", "v")
		in.Metadata.Set(MetadataType, "t.x")
		in.Metadata.Set(reservedPrefix+"evil", "dropped")
		wire, err := encodeEntry("client:ui:runs", in, "inst", now)
		if err != nil {
			t.Fatal(err)
		}
		fields, err := entryFields(wire)
		if err != nil {
			t.Fatal(err)
		}
		out := decodeEntry(fields)
		if reason := out.Metadata.Get(metadataPoison); reason != "" {
			t.Fatalf("payload %q: poison: %s", payload, reason)
		}
		if out.UUID != "id-1" || string(out.Payload) != string(payload) || out.Metadata.Get("test") != "v" ||
			out.Metadata.Get(MetadataTopic) != "client:ui:runs" || out.Metadata.Get(MetadataType) != "t.x" ||
			out.Metadata.Get(MetadataInstanceID) != "inst" || out.Metadata.Get(MetadataTimestamp) != "2025-05-06T07:08:09.000Z" ||
			out.Metadata.Get(reservedPrefix+"evil") != "" {
			t.Fatalf("payload %q: got %s %q %v", payload, out.UUID, out.Payload, out.Metadata)
		}
		m, err := FromWatermill(out)
		if err != nil || m.Topic != "client:ui:runs" || m.EventID != "id-1" || !json.Valid(m.Data) {
			t.Fatalf("FromWatermill = %+v, %v", m, err)
		}
	}
}

func TestDecodeEntryPoison(t *testing.T) {
	valid, _ := Encode(Message{Topic: "a:b", EventID: "e", Timestamp: time.Now(), Data: json.RawMessage(`"!!"`)})
	for name, fields := range map[string]map[string]any{
		"no message field": {"foo": "bar"},
		"not JSON":         {"message": "{"},
		"no topic":         {"message": `{"eventId":"e","timestamp":"2025-01-01T00:00:00Z"}`},
		"bad metadata":     {"message": string(valid), "metadata": "["},
		"bad payload":      {"message": string(valid), "metadata": `{"_nvent_payload":"base64"}`},
	} {
		msg := decodeEntry(fields)
		if msg.Metadata.Get(metadataPoison) == "" {
			t.Errorf("%s: not marked as poison", name)
		}
		var raw map[string]string
		if err := json.Unmarshal(msg.Payload, &raw); err != nil || len(raw) != len(fields) {
			t.Errorf("%s: payload %s does not hold the raw fields", name, msg.Payload)
		}
	}
}
