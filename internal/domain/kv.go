package domain

import (
	"encoding/json"
	"strconv"
	"time"
)

// KVEntry is a JSON value under a key, with an optional expiry. An expired
// entry does not exist: no adapter returns it.
type KVEntry struct {
	Key       string          `json:"key"`
	Value     json.RawMessage `json:"value"`
	ExpiresAt *time.Time      `json:"expiresAt,omitempty"`
}

type kvJSON KVEntry

// MarshalJSON writes expiresAt in TimeLayout.
func (e KVEntry) MarshalJSON() ([]byte, error) {
	var exp string
	if e.ExpiresAt != nil {
		exp = FormatTime(*e.ExpiresAt)
	}
	return json.Marshal(struct {
		kvJSON
		ExpiresAt string `json:"expiresAt,omitempty"`
	}{kvJSON(e), exp})
}

// PrepareKV validates a set and returns the compacted value and the expiry
// (nil without a TTL). A negative ttl is invalid; zero means no expiry.
func PrepareKV(key string, value json.RawMessage, ttl time.Duration, now time.Time) (json.RawMessage, *time.Time, error) {
	if err := ValidateKey(key); err != nil {
		return nil, nil, err
	}
	if ttl < 0 {
		return nil, nil, Errorf(CodeInvalidInput, "ttl must not be negative")
	}
	if len(value) == 0 {
		return nil, nil, Errorf(CodeInvalidInput, "value is empty")
	}
	v, err := CompactJSON(value)
	if err != nil {
		return nil, nil, err
	}
	if ttl == 0 {
		return v, nil, nil
	}
	exp := now.Add(ttl).UTC().Truncate(time.Millisecond)
	return v, &exp, nil
}

// Expired reports whether an entry expiring at exp is gone at now.
func Expired(exp *time.Time, now time.Time) bool {
	return exp != nil && !now.Before(*exp)
}

// IncrValue adds delta to the integer JSON value current (nil: absent, 0) and
// returns the new value. A value that is not an integer is a conflict: the
// key holds something else.
func IncrValue(key string, current json.RawMessage, delta int64) (int64, json.RawMessage, error) {
	var n int64
	if current != nil {
		var err error
		n, err = strconv.ParseInt(string(current), 10, 64)
		if err != nil {
			return 0, nil, Errorf(CodeConflict, "key %q holds %s, not an integer", key, truncate(string(current)))
		}
	}
	sum := n + delta
	if (delta > 0 && sum < n) || (delta < 0 && sum > n) {
		return 0, nil, Errorf(CodeConflict, "incrementing key %q by %d overflows", key, delta)
	}
	return sum, json.RawMessage(strconv.FormatInt(sum, 10)), nil
}
