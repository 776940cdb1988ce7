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

// Stars returns how many '*' p holds.
func (p Pattern) Stars() int { return max(len(p.parts)-1, 0) }

// Match reports whether topic matches p.
func (p Pattern) Match(topic string) bool {
	ok, _ := p.match(topic)
	return ok
}

// match is Match that also returns how many byte comparisons it made: at
// most 2·len(topic) + len(pattern), whatever the pattern (the tests hold it
// to that).
func (p Pattern) match(topic string) (ok bool, ops int) {
	if len(p.parts) == 0 {
		return false, 0
	}
	if len(p.parts) == 1 {
		return topic == p.raw, min(len(topic), len(p.raw))
	}
	first, last := p.parts[0], p.parts[len(p.parts)-1]
	if len(topic) < len(first)+len(last) {
		return false, 0
	}
	ops = len(first) + len(last)
	if !strings.HasPrefix(topic, first) || !strings.HasSuffix(topic, last) {
		return false, ops
	}
	rest := topic[len(first) : len(topic)-len(last)]
	for i, mid := range p.parts[1 : len(p.parts)-1] {
		end, n := kmpIndexEnd(rest, mid, p.fail[i])
		ops += n
		if end < 0 {
			return false, ops
		}
		rest = rest[end:]
	}
	return true, ops
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
// in s, or -1, and the number of byte comparisons it made (at most 2·i for
// the i bytes of s it read).
func kmpIndexEnd(s, needle string, fail []int) (end, ops int) {
	if needle == "" {
		return 0, 0
	}
	k := 0
	for i := 0; i < len(s); i++ {
		for k > 0 && s[i] != needle[k] {
			k = fail[k-1]
			ops++
		}
		ops++
		if s[i] == needle[k] {
			k++
		}
		if k == len(needle) {
			return i + 1, ops
		}
	}
	return -1, ops
}
