package stream

import (
	"slices"
	"testing"
)

func TestLayoutStreams(t *testing.T) {
	l := Layout{}
	l.setDefaults()
	for topic, want := range map[string]string{
		"store-sync:append:nq:flow:r1": "nvent:store-sync",
		"store-sync:kv:k":              "nvent:store-sync",
		"flow:trigger:f":               "nvent:flow",
		"client:ui:runs":               "nvent:client",
		"custom:thing":                 "nvent:custom",
		"plain":                        "nvent:plain",
	} {
		if got, err := l.StreamFor(topic); err != nil || got != want {
			t.Errorf("StreamFor(%q) = %q, %v; want %q", topic, got, err, want)
		}
	}
	for _, bad := range []string{"", "a:*", ":x"} {
		if _, err := l.StreamFor(bad); err == nil {
			t.Errorf("StreamFor(%q) succeeded", bad)
		}
	}
	all := []string{"nvent:store-sync", "nvent:flow", "nvent:client"}
	for pattern, want := range map[string][]string{
		"store-sync:append:*": {"nvent:store-sync"},
		"flow:event:r1":       {"nvent:flow"},
		"custom:*":            {"nvent:custom"},
		"*":                   all,
		"*:flow:*":            all,
		"store*":              all,
		"store-sync*":         all,
	} {
		if got, err := l.StreamsFor(pattern); err != nil || !slices.Equal(got, want) {
			t.Errorf("StreamsFor(%q) = %q, %v; want %q", pattern, got, err, want)
		}
	}
	if got := l.PoisonTopic("nvent:flow"); got != "poison:flow" {
		t.Errorf("PoisonTopic = %q", got)
	}
	if l.maxLen("nvent:flow") != 500_000 || l.maxLen("nvent:custom") != DefaultMaxLen {
		t.Errorf("maxLen: flow %d, custom %d", l.maxLen("nvent:flow"), l.maxLen("nvent:custom"))
	}
	l2 := Layout{MaxLen: map[string]int64{"flow": -1}, DefaultMaxLen: -1}
	l2.setDefaults()
	if l2.maxLen("nvent:flow") != 0 || l2.maxLen("nvent:custom") != 0 || l2.maxLen("nvent:client") != 100_000 {
		t.Errorf("maxLen with overrides: %v", l2.maxLens())
	}
}
