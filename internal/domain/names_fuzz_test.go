package domain

import (
	"encoding/json"
	"errors"
	"regexp"
	"strings"
	"testing"
)

// nameRule is the name rule as the README states it.
var nameRule = regexp.MustCompile(`^[A-Za-z0-9._:@-]{1,256}$`)

// FuzzValidateSubject holds every name check (subjects, collections,
// document ids, keys, event ids) to the documented rule, for any input:
// valid exactly when the rule says so, and otherwise an invalid_input
// error whose message stays short however long the input (an attacker's
// megabyte is not echoed back).
func FuzzValidateSubject(f *testing.F) {
	for _, s := range []string{
		"orders:42", "nq:flow:r1", "a", "", "*", "a:*", "store-sync:append:*", "a b", "é", "\x00", "a\nb",
		"'; DROP TABLE events; --", `" OR 1=1`, "$1", strings.Repeat("s", 256), strings.Repeat("s", 257),
	} {
		f.Add(s)
	}
	checks := map[string]func(string) error{
		"subject": ValidateSubject, "collection": ValidateCollection, "document id": ValidateDocumentID,
		"key": ValidateKey, "event id": ValidateEventID,
	}
	f.Fuzz(func(t *testing.T, s string) {
		want := nameRule.MatchString(s)
		for kind, check := range checks {
			err := check(s)
			if (err == nil) != want {
				t.Fatalf("Validate %s(%q) = %v; the rule says valid=%v", kind, s, err, want)
			}
			if err == nil {
				continue
			}
			var e *Error
			if !errors.As(err, &e) || e.Code != CodeInvalidInput {
				t.Fatalf("Validate %s(%q) = %v, not an invalid_input *Error", kind, s, err)
			}
			if len(e.Message) > 512 {
				t.Fatalf("Validate %s(%q): message of %d bytes", kind, s, len(e.Message))
			}
		}
		// A valid event type is a valid name of at most 128 bytes.
		if err := ValidateEventType(s); (err == nil) != (want && len(s) <= MaxTypeLen) {
			t.Fatalf("ValidateEventType(%q) = %v", s, err)
		}
		// Run ids: a valid id comes back from its subject.
		if want {
			if got := RunIDFromSubject(FlowSubject(s)); got != s {
				t.Fatalf("RunIDFromSubject(FlowSubject(%q)) = %q", s, got)
			}
		}
	})
}

// FuzzPrepareAppend feeds an event of arbitrary fields and data to
// PrepareAppend (what every adapter runs before it writes): it never
// panics, fails only with a *Error, and what it accepts is complete — an
// id, a valid type, compact JSON data.
func FuzzPrepareAppend(f *testing.F) {
	f.Add("orders:1", "", "order.placed", "", []byte(`{"total": 10}`), 0)
	f.Add("nq:flow:r1", "e1", "flow.start", "billing", []byte(`null`), 1)
	f.Add("s", "a*b", "t", "", []byte(`{`), -1)
	f.Add("s", "", "", "", []byte("\"\\u0000\\ud800\""), 0)
	f.Add("s", "'; DROP TABLE events; --", "t", "", []byte(`"$1"`), 0)
	f.Fuzz(func(t *testing.T, subject, id, typ, flow string, data []byte, attempt int) {
		evs, err := PrepareAppend(subject, []NewEvent{{ID: id, Type: typ, FlowName: flow, Data: data, Attempt: attempt}})
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || (e.Code != CodeInvalidInput && e.Code != CodeTooLarge) {
				t.Fatalf("PrepareAppend failed with %v, not an invalid_input or too_large *Error", err)
			}
			return
		}
		e := evs[0]
		if ValidateEventID(e.ID) != nil || ValidateEventType(e.Type) != nil || e.Subject != subject || !json.Valid(e.Data) {
			t.Fatalf("PrepareAppend accepted an incomplete event %+v", e)
		}
		if compact, err := CompactJSON(e.Data); err != nil || string(compact) != string(e.Data) {
			t.Fatalf("data %q is not compact", e.Data)
		}
	})
}
