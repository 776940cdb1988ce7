package domain

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestLimitsDefaultsAndBounds(t *testing.T) {
	if got := (Limits{}).Normalize(); got != DefaultLimits() {
		t.Fatalf("zero limits normalize to %+v, want the defaults %+v", got, DefaultLimits())
	}
	for _, l := range []Limits{{MaxBatchEvents: MaxBatch + 1}, {MaxSubjectBytes: MaxNameLen + 1}, {MaxKeyBytes: MaxNameLen + 1}, {MaxPageSize: MaxListLimit + 1}} {
		if err := l.Validate(); ErrorCode(err) != CodeInvalidInput {
			t.Errorf("%+v: Validate = %v, want invalid_input", l, err)
		}
	}
	if err := DefaultLimits().Validate(); err != nil {
		t.Fatalf("the defaults do not validate: %v", err)
	}
}

func TestLimitChecks(t *testing.T) {
	l := Limits{MaxBatchEvents: 2, MaxEventDataBytes: 8, MaxSubjectBytes: 3, MaxKeyBytes: 4, MaxPageSize: 5}
	data := func(s string) []NewEvent { return []NewEvent{{Type: "t", Data: json.RawMessage(s)}} }
	for name, tc := range map[string]struct {
		err  error
		code Code
	}{
		"batch at the limit":        {l.CheckEvents(make([]NewEvent, 2)), ""},
		"batch over":                {l.CheckEvents(make([]NewEvent, 3)), CodeTooLarge},
		"data at the limit":         {l.CheckEvents(data(`"123456"`)), ""},
		"data at the limit, spaced": {l.CheckEvents(data(`  "123456"  `)), ""},
		"data over":                 {l.CheckEvents(data(`"1234567"`)), CodeTooLarge},
		"data over, not JSON":       {l.CheckEvents(data(`"12345678`)), CodeInvalidInput},
		"subject at the limit":      {l.CheckSubject("abc"), ""},
		"subject over":              {l.CheckSubject("abcd"), CodeInvalidInput},
		"key at the limit":          {l.CheckKey("key", "abcd"), ""},
		"key over":                  {l.CheckKey("key", "abcde"), CodeInvalidInput},
		"page at the limit":         {l.CheckPageSize(5), ""},
		"page over":                 {l.CheckPageSize(6), CodeInvalidInput},
	} {
		if tc.code == "" && tc.err != nil || tc.code != "" && ErrorCode(tc.err) != tc.code {
			t.Errorf("%s: %v, want code %q", name, tc.err, tc.code)
		}
	}
	if err := l.CheckEvents([]NewEvent{{}, {Data: json.RawMessage(`"` + strings.Repeat("x", 9) + `"`)}}); err == nil || !strings.Contains(err.Error(), "event 1") {
		t.Errorf("an oversized event in a batch: %v, want its index named", err)
	}
}
