package stream

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/nvent/nvent/internal/domain"
)

// referenceEncode is Encode written with encoding/json, the way it was
// before Encode wrote the envelope by hand: the hand-written one must give
// the same bytes.
func referenceEncode(t *testing.T, m Message) []byte {
	t.Helper()
	var data bytes.Buffer
	if len(m.Data) == 0 {
		data.WriteString("null")
	} else if err := json.Compact(&data, m.Data); err != nil {
		t.Fatal(err)
	}
	ts, _ := json.Marshal(domain.FormatTime(m.Timestamp))
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(wireMessage{Type: m.Type, Topic: m.Topic, Data: data.Bytes(), Timestamp: ts, InstanceID: m.InstanceID, EventID: m.EventID}); err != nil {
		t.Fatal(err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

func TestEncodeMatchesEncodingJSON(t *testing.T) {
	strs := []string{"", "plain", `quo"te`, `back\slash`, "tab\tnew\nline\rret", "ctl\x00\x01\x1f\x7f", "<html>&amp;",
		"ünïcödé ✓ 🎉", "bad\xffutf8\xc3", "line\u2028sep\u2029", "\u00e9\u0301"}
	ts := time.Date(2026, 11, 28, 10, 0, 0, 123_000_000, time.UTC)
	for _, s := range strs {
		for _, data := range []string{"", `{"a": [1, 2, {"b": "c d"}]}`, `"` + `x\u003cy` + `"`, "  42  "} {
			m := Message{Type: s, Topic: "store-sync:append:a", Data: json.RawMessage(data), Timestamp: ts, InstanceID: s, EventID: "id" + s}
			got, err := Encode(m)
			if err != nil {
				t.Fatalf("Encode(%q, %q): %v", s, data, err)
			}
			if want := referenceEncode(t, m); !bytes.Equal(got, want) {
				t.Fatalf("Encode(%q, %q)\n got %s\nwant %s", s, data, got, want)
			}
			back, err := Decode(got)
			if err != nil {
				t.Fatalf("Decode(%s): %v", got, err)
			}
			if utf8.ValidString(s) && back.EventID != m.EventID {
				t.Fatalf("event id %q came back as %q", m.EventID, back.EventID)
			}
		}
	}
	if _, err := Encode(Message{Topic: "a:b", EventID: "x", Timestamp: ts, Data: json.RawMessage(`{"a":`)}); err == nil {
		t.Fatal("invalid data was encoded")
	}
}
