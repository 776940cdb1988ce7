package stream

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/nvent/nvent/internal/domain"
)

// Message is one stream message as every backend carries it and as `nvent
// tail`, SSE and WebSocket clients see it:
//
//	{"type":"store.append","topic":"store-sync:append:orders","data":{…},
//	 "timestamp":"2025-01-02T03:04:05.678Z","instanceId":"…","eventId":"…"}
//
// Data is raw JSON; Timestamp is rendered as RFC 3339 with milliseconds, UTC
// (domain.TimeLayout). EventID is unique per logical message and stays the
// same when a message is delivered again, so consumers deduplicate on it.
type Message struct {
	Type       string
	Topic      string
	Data       json.RawMessage
	Timestamp  time.Time
	InstanceID string
	EventID    string
}

// Metadata keys of a Watermill message delivered by a Subscriber (and read by
// a Publisher). The Watermill message UUID is the EventID and its payload is
// the Data.
const (
	MetadataTopic      = "topic"
	MetadataType       = "type"
	MetadataTimestamp  = "timestamp"
	MetadataInstanceID = "instanceId"
)

// reservedPrefix marks metadata that only this package writes; a Publisher
// drops such keys from the messages it is given.
const reservedPrefix = "_nvent_"

const (
	// metadataPayload records how a payload that is not JSON was carried in
	// Data ("empty", "text" or "base64"), so that it arrives byte for byte.
	metadataPayload = reservedPrefix + "payload"
	// metadataPoison marks a message that the backend could not decode; its
	// payload is the raw entry as a JSON object and its value is the reason.
	metadataPoison = reservedPrefix + "poison"
)

// Field names of a stream entry (a Redis stream entry, or its in-memory twin).
const (
	fieldMessage  = "message"  // the Message as JSON: the contract's shape
	fieldMetadata = "metadata" // optional: further Watermill metadata as a JSON object
)

// DecodeError reports a stream message that cannot be decoded. Reason is a
// short, stable description ("invalid JSON", "missing topic", …).
type DecodeError struct {
	Reason string
	Err    error
}

func (e *DecodeError) Error() string {
	if e.Err == nil {
		return "error decoding stream message: " + e.Reason
	}
	return "error decoding stream message: " + e.Reason + ": " + e.Err.Error()
}

// Unwrap returns the cause, if any.
func (e *DecodeError) Unwrap() error { return e.Err }

type wireMessage struct {
	Type       string          `json:"type"`
	Topic      string          `json:"topic"`
	Data       json.RawMessage `json:"data"`
	Timestamp  json.RawMessage `json:"timestamp"`
	InstanceID string          `json:"instanceId"`
	EventID    string          `json:"eventId"`
}

// Encode renders m as the contract's JSON. Data must be valid JSON (empty
// means null) and is compacted; Topic and EventID must be set and Timestamp
// must not be zero.
func Encode(m Message) ([]byte, error) {
	if err := ValidateTopic(m.Topic); err != nil {
		return nil, fmt.Errorf("error encoding stream message: %w", err)
	}
	if m.EventID == "" {
		return nil, domain.Errorf(domain.CodeInvalidInput, "error encoding stream message: eventId is empty")
	}
	if m.Timestamp.IsZero() {
		return nil, domain.Errorf(domain.CodeInvalidInput, "error encoding stream message: timestamp is zero")
	}
	// One pass over data: json.Compact validates as it copies. The rest is
	// written by hand: the encoder's reflection and its second validation
	// of data cost more than the message's own bytes.
	buf := make([]byte, 0, len(m.Data)+len(m.Topic)+len(m.Type)+len(m.InstanceID)+len(m.EventID)+110)
	buf = append(buf, `{"type":`...)
	buf = appendJSONString(buf, m.Type)
	buf = append(buf, `,"topic":`...)
	buf = appendJSONString(buf, m.Topic)
	buf = append(buf, `,"data":`...)
	if len(m.Data) == 0 {
		buf = append(buf, "null"...)
	} else {
		out := bytes.NewBuffer(buf)
		if err := json.Compact(out, m.Data); err != nil {
			return nil, domain.Errorf(domain.CodeInvalidInput, "error encoding stream message: data is not valid JSON")
		}
		buf = out.Bytes()
	}
	buf = append(buf, `,"timestamp":"`...)
	buf = append(buf, domain.FormatTime(m.Timestamp)...)
	buf = append(buf, `","instanceId":`...)
	buf = appendJSONString(buf, m.InstanceID)
	buf = append(buf, `,"eventId":`...)
	buf = appendJSONString(buf, m.EventID)
	return append(buf, '}'), nil
}

// appendJSONString appends s as a JSON string, escaped as encoding/json
// does with HTML escaping off: quotes, backslashes and control characters
// escaped, invalid UTF-8 replaced by U+FFFD, U+2028 and U+2029 escaped.
func appendJSONString(buf []byte, s string) []byte {
	const hex = "0123456789abcdef"
	buf = append(buf, '"')
	start := 0
	for i := 0; i < len(s); {
		if b := s[i]; b < utf8.RuneSelf {
			if b >= 0x20 && b != '"' && b != '\\' {
				i++
				continue
			}
			buf = append(buf, s[start:i]...)
			switch b {
			case '"', '\\':
				buf = append(buf, '\\', b)
			case '\n':
				buf = append(buf, '\\', 'n')
			case '\r':
				buf = append(buf, '\\', 'r')
			case '\t':
				buf = append(buf, '\\', 't')
			default:
				buf = append(buf, '\\', 'u', '0', '0', hex[b>>4], hex[b&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			buf = append(buf, s[start:i]...)
			buf = append(buf, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			buf = append(buf, s[start:i]...)
			buf = append(buf, '\\', 'u', '2', '0', '2', hex[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	buf = append(buf, s[start:]...)
	return append(buf, '"')
}

// Decode parses the contract's JSON. It fails with a *DecodeError when b is
// not a JSON object, when topic or eventId is missing, when topic is not a
// valid topic, or when timestamp is missing or unreadable. For messages
// written by other producers, timestamp may also be a number of milliseconds
// since the Unix epoch; a missing data field reads as null.
func Decode(b []byte) (Message, error) {
	var w wireMessage
	if err := json.Unmarshal(b, &w); err != nil {
		return Message{}, &DecodeError{Reason: "invalid JSON", Err: err}
	}
	if w.Topic == "" {
		return Message{}, &DecodeError{Reason: "missing topic"}
	}
	if err := ValidateTopic(w.Topic); err != nil {
		return Message{}, &DecodeError{Reason: "invalid topic", Err: err}
	}
	if w.EventID == "" {
		return Message{}, &DecodeError{Reason: "missing eventId"}
	}
	ts, err := decodeTimestamp(w.Timestamp)
	if err != nil {
		return Message{}, err
	}
	data := w.Data
	if len(data) == 0 {
		data = json.RawMessage("null")
	}
	return Message{
		Type:       w.Type,
		Topic:      w.Topic,
		Data:       data,
		Timestamp:  ts,
		InstanceID: w.InstanceID,
		EventID:    w.EventID,
	}, nil
}

func decodeTimestamp(raw json.RawMessage) (time.Time, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return time.Time{}, &DecodeError{Reason: "missing timestamp"}
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return time.Time{}, &DecodeError{Reason: "invalid timestamp", Err: err}
		}
		return checkTimestamp(t.UTC())
	}
	ms, err := strconv.ParseInt(string(raw), 10, 64)
	if err != nil {
		return time.Time{}, &DecodeError{Reason: "invalid timestamp", Err: err}
	}
	return checkTimestamp(time.UnixMilli(ms).UTC())
}

// checkTimestamp refuses the zero time and years outside 1…9999: Encode
// refuses the one, and RFC 3339 cannot write the others, so a message
// carrying them could be decoded but never passed on.
func checkTimestamp(t time.Time) (time.Time, error) {
	if t.IsZero() || t.Year() < 1 || t.Year() > 9999 {
		return time.Time{}, &DecodeError{Reason: "invalid timestamp", Err: fmt.Errorf("%v is out of range", t)}
	}
	return t, nil
}

// MarshalJSON renders m with Encode.
func (m Message) MarshalJSON() ([]byte, error) { return Encode(m) }

// UnmarshalJSON parses m with Decode.
func (m *Message) UnmarshalJSON(b []byte) error {
	d, err := Decode(b)
	if err != nil {
		return err
	}
	*m = d
	return nil
}

// NewWatermillMessage turns m into a Watermill message for Publisher.Publish:
// the UUID is m.EventID (a new UUID when empty), the payload is m.Data, and
// Type and Timestamp (when not zero) go into metadata. The topic is the one
// given to Publish.
func NewWatermillMessage(m Message) *message.Message {
	id := m.EventID
	if id == "" {
		id = watermill.NewUUID()
	}
	msg := message.NewMessage(id, message.Payload(m.Data))
	if m.Type != "" {
		msg.Metadata.Set(MetadataType, m.Type)
	}
	if !m.Timestamp.IsZero() {
		msg.Metadata.Set(MetadataTimestamp, domain.FormatTime(m.Timestamp))
	}
	return msg
}

// FromWatermill rebuilds the stream Message from a message delivered by a
// Subscriber (from its UUID, payload and the Metadata* keys).
func FromWatermill(msg *message.Message) (Message, error) {
	m := Message{
		Type:       msg.Metadata.Get(MetadataType),
		Topic:      msg.Metadata.Get(MetadataTopic),
		InstanceID: msg.Metadata.Get(MetadataInstanceID),
		EventID:    msg.UUID,
	}
	m.Data, _ = dataFromPayload(msg.Payload)
	ts, err := time.Parse(time.RFC3339Nano, msg.Metadata.Get(MetadataTimestamp))
	if err != nil {
		return Message{}, fmt.Errorf("error reading timestamp metadata of message %s: %w", msg.UUID, err)
	}
	if m.Timestamp, err = checkTimestamp(ts.UTC()); err != nil {
		return Message{}, fmt.Errorf("error reading timestamp metadata of message %s: %w", msg.UUID, err)
	}
	if err := ValidateTopic(m.Topic); err != nil {
		return Message{}, fmt.Errorf("error reading topic metadata of message %s: %w", msg.UUID, err)
	}
	return m, nil
}

// dataFromPayload returns the JSON to carry a Watermill payload as Data, and
// how it was carried: "" for a JSON payload (carried as is, compacted),
// "empty", "text" (a JSON string) or "base64" (a JSON string of base64).
func dataFromPayload(p []byte) (json.RawMessage, string) {
	switch {
	case len(p) == 0:
		return json.RawMessage("null"), "empty"
	case json.Valid(p):
		return json.RawMessage(p), ""
	case utf8.Valid(p):
		s, _ := json.Marshal(string(p))
		return s, "text"
	default:
		s, _ := json.Marshal(base64.StdEncoding.EncodeToString(p))
		return s, "base64"
	}
}

// payloadFromData reverses dataFromPayload.
func payloadFromData(data json.RawMessage, carried string) ([]byte, error) {
	switch carried {
	case "":
		return data, nil
	case "empty":
		return nil, nil
	case "text", "base64":
		var s string
		if err := json.Unmarshal(data, &s); err != nil {
			return nil, fmt.Errorf("error reading %s payload: %w", carried, err)
		}
		if carried == "text" {
			return []byte(s), nil
		}
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return nil, fmt.Errorf("error reading base64 payload: %w", err)
		}
		return b, nil
	}
	return nil, fmt.Errorf("unknown payload encoding %q", carried)
}

// encodeEntry builds the wire form of msg published on topic: a Watermill
// message whose UUID is the event id, whose payload is the encoded Message
// and whose metadata is what remains of msg's metadata after the Message took
// its part (plus metadataPayload when the payload is not JSON).
func encodeEntry(topic string, msg *message.Message, instanceID string, now time.Time) (*message.Message, error) {
	m := Message{
		Type:       msg.Metadata.Get(MetadataType),
		Topic:      topic,
		Timestamp:  now,
		InstanceID: instanceID,
		EventID:    msg.UUID,
	}
	if ts := msg.Metadata.Get(MetadataTimestamp); ts != "" {
		t, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil {
			return nil, domain.Errorf(domain.CodeInvalidInput, "error reading timestamp metadata of message %s: %w", msg.UUID, err)
		}
		m.Timestamp = t
	}
	var carried string
	m.Data, carried = dataFromPayload(msg.Payload)
	body, err := Encode(m)
	if err != nil {
		return nil, err
	}
	extra := make(message.Metadata)
	for k, v := range msg.Metadata {
		switch {
		case k == MetadataTopic, k == MetadataType, k == MetadataTimestamp, k == MetadataInstanceID:
		case strings.HasPrefix(k, reservedPrefix):
		default:
			extra[k] = v
		}
	}
	if carried != "" {
		extra[metadataPayload] = carried
	}
	wire := message.NewMessage(m.EventID, body)
	wire.Metadata = extra
	wire.SetContext(msg.Context())
	return wire, nil
}

// entryFields returns the fields of the stream entry for a wire message.
func entryFields(wire *message.Message) (map[string]any, error) {
	fields := map[string]any{fieldMessage: string(wire.Payload)}
	if len(wire.Metadata) > 0 {
		md, err := json.Marshal(wire.Metadata)
		if err != nil {
			return nil, fmt.Errorf("error encoding metadata of message %s: %w", wire.UUID, err)
		}
		fields[fieldMetadata] = string(md)
	}
	return fields, nil
}

// decodeEntry turns the fields of a stream entry into the Watermill message a
// Subscriber delivers. It never fails: an entry that cannot be decoded yields
// a message marked with metadataPoison whose payload is the raw fields.
func decodeEntry(values map[string]any) *message.Message {
	fields := make(map[string]string, len(values))
	for k, v := range values {
		switch v := v.(type) {
		case string:
			fields[k] = v
		case []byte:
			fields[k] = string(v)
		default:
			fields[k] = fmt.Sprint(v)
		}
	}
	body, ok := fields[fieldMessage]
	if !ok {
		return poisonEntry(fields, `missing field "message"`)
	}
	m, err := Decode([]byte(body))
	if err != nil {
		return poisonEntry(fields, err.Error())
	}
	var extra map[string]string
	if md := fields[fieldMetadata]; md != "" {
		if err := json.Unmarshal([]byte(md), &extra); err != nil {
			return poisonEntry(fields, "invalid metadata field: "+err.Error())
		}
	}
	payload, err := payloadFromData(m.Data, extra[metadataPayload])
	if err != nil {
		return poisonEntry(fields, err.Error())
	}
	msg := message.NewMessage(m.EventID, payload)
	for k, v := range extra {
		if !strings.HasPrefix(k, reservedPrefix) {
			msg.Metadata[k] = v
		}
	}
	msg.Metadata[MetadataTopic] = m.Topic
	msg.Metadata[MetadataType] = m.Type
	msg.Metadata[MetadataTimestamp] = domain.FormatTime(m.Timestamp)
	msg.Metadata[MetadataInstanceID] = m.InstanceID
	return msg
}

func poisonEntry(fields map[string]string, reason string) *message.Message {
	raw, _ := json.Marshal(fields)
	msg := message.NewMessage(watermill.NewUUID(), raw)
	msg.Metadata[metadataPoison] = reason
	return msg
}
