package stream

import (
	"strings"

	"github.com/nvent/nvent/internal/domain"
)

// Pattern is a compiled topic pattern. '*' matches any run of characters,
// colons included (as in Redis PSUBSCRIBE); every other byte matches itself.
// A pattern without '*' matches exactly one topic. A Pattern is immutable and
// safe for concurrent use.
//
// Matching takes O(len(topic) + len(pattern)) time whatever the pattern: the
// literal pieces between stars are found left to right, each at its leftmost
// occurrence after the previous one (which is always a correct choice for
// '*'-only globs), with Knuth–Morris–Pratt so that no byte of the topic is
// compared more than a bounded number of times.
type Pattern struct {
	raw   string
	parts []string // raw split at '*': len 1 for a literal topic
	fail  [][]int  // KMP failure function of each middle part
}

// CompilePattern compiles s. It fails only for an empty pattern.
func CompilePattern(s string) (Pattern, error) {
	if s == "" {
		return Pattern{}, domain.Errorf(domain.CodeInvalidInput, "topic pattern is empty")
	}
	p := Pattern{raw: s, parts: strings.Split(s, "*")}
	if len(p.parts) > 2 {
		for _, mid := range p.parts[1 : len(p.parts)-1] {
			p.fail = append(p.fail, kmpTable(mid))
		}
	}
	return p, nil
}

// Match reports whether topic matches pattern. It compiles the pattern on
// every call; compile once with CompilePattern to match many topics.
func Match(pattern, topic string) bool {
	p, err := CompilePattern(pattern)
	return err == nil && p.Match(topic)
}

// String returns the pattern as written.
func (p Pattern) String() string { return p.raw }

// Literal reports whether p holds no '*' and so matches only itself.
func (p Pattern) Literal() bool { return len(p.parts) == 1 }

// Match reports whether topic matches p.
func (p Pattern) Match(topic string) bool {
	if len(p.parts) == 0 {
		return false
	}
	if len(p.parts) == 1 {
		return topic == p.raw
	}
	first, last := p.parts[0], p.parts[len(p.parts)-1]
	if len(topic) < len(first)+len(last) || !strings.HasPrefix(topic, first) || !strings.HasSuffix(topic, last) {
		return false
	}
	rest := topic[len(first) : len(topic)-len(last)]
	for i, mid := range p.parts[1 : len(p.parts)-1] {
		end := kmpIndexEnd(rest, mid, p.fail[i])
		if end < 0 {
			return false
		}
		rest = rest[end:]
	}
	return true
}

// kmpTable returns the KMP failure function of needle: for each prefix length
// i+1, the length of its longest proper prefix that is also its suffix.
func kmpTable(needle string) []int {
	fail := make([]int, len(needle))
	k := 0
	for i := 1; i < len(needle); i++ {
		for k > 0 && needle[i] != needle[k] {
			k = fail[k-1]
		}
		if needle[i] == needle[k] {
			k++
		}
		fail[i] = k
	}
	return fail
}

// kmpIndexEnd returns the index just past the leftmost occurrence of needle
// in s, or -1.
func kmpIndexEnd(s, needle string, fail []int) int {
	if needle == "" {
		return 0
	}
	k := 0
	for i := 0; i < len(s); i++ {
		for k > 0 && s[i] != needle[k] {
			k = fail[k-1]
		}
		if s[i] == needle[k] {
			k++
		}
		if k == len(needle) {
			return i + 1
		}
	}
	return -1
}
