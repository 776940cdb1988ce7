package stream

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/nvent/nvent/internal/domain"
)

// Defaults of a Layout.
const (
	DefaultKeyPrefix = "nvent:"
	// DefaultMaxLen bounds a physical stream that Layout.MaxLen does not name.
	DefaultMaxLen int64 = 100_000
	// PoisonChannel is the first segment of poison topics
	// ("poison:{channel}"); they live on the stream KeyPrefix+"poison".
	PoisonChannel = "poison"
)

// DefaultChannels are the physical streams that a pattern whose first
// segment is not spelled out (such as "*") reads from.
func DefaultChannels() []string { return []string{"store-sync", "flow", "client"} }

// DefaultMaxLens are the per-channel trimming bounds used unless
// Layout.MaxLen overrides them. Flow events drive orchestration and are
// consumed by work groups that may lag, so they keep a longer history.
func DefaultMaxLens() map[string]int64 {
	return map[string]int64{
		"store-sync":  100_000,
		"client":      100_000,
		"flow":        500_000,
		PoisonChannel: 10_000,
	}
}

// Layout maps topics to physical streams. Publishers and subscribers that
// should see each other must use equal Layouts (at least the same KeyPrefix).
//
// A topic's channel is its first segment, the text before the first ':'
// (the whole topic when it has no ':'), and its physical stream is
// KeyPrefix+channel: "store-sync:append:orders" → "nvent:store-sync".
// Layout is a value; its methods do not modify it.
type Layout struct {
	// KeyPrefix namespaces every key: the streams, and through them the Redis
	// consumer groups. Default DefaultKeyPrefix.
	KeyPrefix string
	// Channels lists the channels read by patterns whose first segment holds
	// a '*'. Default DefaultChannels().
	Channels []string
	// MaxLen bounds the length of a channel's stream (approximately, see the
	// package documentation); a value <= 0 disables trimming for that
	// channel. Entries are merged over DefaultMaxLens().
	MaxLen map[string]int64
	// DefaultMaxLen bounds channels not in MaxLen. 0 means DefaultMaxLen;
	// a negative value disables trimming.
	DefaultMaxLen int64
}

func (l *Layout) setDefaults() {
	if l.KeyPrefix == "" {
		l.KeyPrefix = DefaultKeyPrefix
	}
	if len(l.Channels) == 0 {
		l.Channels = DefaultChannels()
	} else {
		l.Channels = slices.Clone(l.Channels)
	}
	merged := DefaultMaxLens()
	maps.Copy(merged, l.MaxLen)
	l.MaxLen = merged
	if l.DefaultMaxLen == 0 {
		l.DefaultMaxLen = DefaultMaxLen
	}
}

// Validate reports a configuration error.
func (l Layout) Validate() error {
	if l.KeyPrefix == "" {
		return fmt.Errorf("stream layout: KeyPrefix is empty")
	}
	if strings.Contains(l.KeyPrefix, "*") {
		return fmt.Errorf("stream layout: KeyPrefix %q holds '*'", l.KeyPrefix)
	}
	for _, c := range l.Channels {
		if c == "" || strings.ContainsAny(c, ":*") {
			return fmt.Errorf("stream layout: channel %q must be non-empty and hold neither ':' nor '*'", c)
		}
	}
	return nil
}

// ValidateTopic reports whether topic can be published: it must be non-empty,
// hold no '*', and have a non-empty first segment.
func ValidateTopic(topic string) error {
	switch {
	case topic == "":
		return domain.Errorf(domain.CodeInvalidInput, "topic is empty")
	case strings.Contains(topic, "*"):
		return domain.Errorf(domain.CodeInvalidInput, "topic %q holds '*', which only patterns may use", topic)
	case strings.HasPrefix(topic, ":"):
		return domain.Errorf(domain.CodeInvalidInput, "topic %q has an empty first segment", topic)
	}
	return nil
}

// channelOf returns the first segment of a topic or pattern.
func channelOf(s string) string {
	if i := strings.IndexByte(s, ':'); i >= 0 {
		return s[:i]
	}
	return s
}

// StreamFor returns the physical stream of topic.
func (l Layout) StreamFor(topic string) (string, error) {
	if err := ValidateTopic(topic); err != nil {
		return "", err
	}
	return l.KeyPrefix + channelOf(topic), nil
}

// StreamsFor returns the physical streams a subscription to pattern reads.
// A pattern without '*' is a topic and reads its own stream. A pattern whose
// first segment holds no '*' and is followed by ':' ("store-sync:append:*")
// can only match topics of that channel and reads that one stream. Any other
// pattern ("*", "*:append:*", "store*") reads every stream in Channels, so
// topics of other channels are reachable only by naming their channel.
func (l Layout) StreamsFor(pattern string) ([]string, error) {
	if pattern == "" {
		return nil, domain.Errorf(domain.CodeInvalidInput, "topic pattern is empty")
	}
	if !strings.Contains(pattern, "*") {
		s, err := l.StreamFor(pattern)
		if err != nil {
			return nil, err
		}
		return []string{s}, nil
	}
	if i := strings.IndexByte(pattern, ':'); i > 0 && !strings.Contains(pattern[:i], "*") {
		return []string{l.KeyPrefix + pattern[:i]}, nil
	}
	if strings.HasPrefix(pattern, ":") {
		return nil, domain.Errorf(domain.CodeInvalidInput, "topic pattern %q has an empty first segment", pattern)
	}
	streams := make([]string, len(l.Channels))
	for i, c := range l.Channels {
		streams[i] = l.KeyPrefix + c
	}
	return streams, nil
}

// PoisonTopic returns the topic under which undecodable entries of stream are
// reported: "poison:{channel}".
func (l Layout) PoisonTopic(stream string) string {
	return PoisonChannel + ":" + strings.TrimPrefix(stream, l.KeyPrefix)
}

// maxLen returns the trimming bound of a physical stream; 0 means none.
func (l Layout) maxLen(stream string) int64 {
	if n, ok := l.MaxLen[strings.TrimPrefix(stream, l.KeyPrefix)]; ok {
		return max(n, 0)
	}
	return max(l.DefaultMaxLen, 0)
}

// maxLens returns maxLen for every stream named in MaxLen.
func (l Layout) maxLens() map[string]int64 {
	m := make(map[string]int64, len(l.MaxLen))
	for c := range l.MaxLen {
		m[l.KeyPrefix+c] = l.maxLen(l.KeyPrefix + c)
	}
	return m
}
