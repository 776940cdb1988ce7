package stream

import (
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestMatch(t *testing.T) {
	cases := []struct {
		pattern, topic string
		want           bool
	}{
		{"store-sync:append:*", "store-sync:append:orders", true},
		{"store-sync:append:*", "store-sync:append:nq:flow:r1", true}, // '*' spans colons
		{"store-sync:append:*", "store-sync:append:", true},
		{"store-sync:append:*", "store-sync:save:c:1", false},
		{"store-sync:append:*", "store-sync:append", false},
		{"*", "anything:at:all", true},
		{"*", "", true},
		{"**", "x", true},
		{"flow:event:r1", "flow:event:r1", true},
		{"flow:event:r1", "flow:event:r10", false},
		{"*:flow:*", "client:flow:r1", true},
		{"*:flow:*", "flow:event:r1", false},
		{"a*b*c", "abc", true},
		{"a*b*c", "axxbyyc", true},
		{"a*b*c", "acb", false},
		{"a*aa", "aa", false},
		{"a*aa", "aaa", true},
		{"ab*ba", "aba", false},
		{"*abab*", "aabababb", true},
		{"x*", "y", false},
		{"?", "?", true}, // only '*' is special
		{"[a]", "a", false},
	}
	for _, c := range cases {
		if got := Match(c.pattern, c.topic); got != c.want {
			t.Errorf("Match(%q, %q) = %v, want %v", c.pattern, c.topic, got, c.want)
		}
	}
	if Match("", "") {
		t.Error(`Match("", "") = true; an empty pattern matches nothing`)
	}
	if _, err := CompilePattern(""); err == nil {
		t.Error("CompilePattern(\"\") succeeded")
	}
}

// TestMatchIsLinear runs patterns that make backtracking matchers take
// quadratic or exponential time against a long topic.
func TestMatchIsLinear(t *testing.T) {
	topic := strings.Repeat("a", 200_000)
	patterns := []string{
		strings.Repeat("*a", 1000) + "*b",
		"*" + strings.Repeat("a", 5000) + "b*",
		strings.Repeat("a*", 3000) + "b",
		"*" + strings.Repeat("a", 199_999) + "b",
	}
	for _, s := range patterns {
		p, err := CompilePattern(s)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if p.Match(topic) {
			t.Errorf("pattern of %d bytes matched", len(s))
		}
		// Linear work here is well under a millisecond; a quadratic matcher
		// needs seconds to minutes.
		if d := time.Since(start); d > time.Second {
			t.Errorf("pattern of %d bytes took %v", len(s), d)
		}
	}
}

// referenceMatch is the obvious, slow definition: a regexp with every
// literal quoted and '*' as "(?s:.*)".
func referenceMatch(pattern, topic string) bool {
	parts := strings.Split(pattern, "*")
	for i, p := range parts {
		parts[i] = regexp.QuoteMeta(p)
	}
	return regexp.MustCompile(`^(?s:` + strings.Join(parts, ".*") + `)$`).MatchString(topic)
}

func FuzzMatch(f *testing.F) {
	seeds := [][2]string{
		{"store-sync:append:*", "store-sync:append:a:b"},
		{"*", ""},
		{"a*b*c", "aXbYc"},
		{"*aa*a", "aaa"},
		{"ab*ba", "aba"},
		{"**:*", ":"},
		{"*abab*", "aabababb"},
		{".+*(", ".+xx("},
	}
	for _, s := range seeds {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, pattern, topic string) {
		if pattern == "" || len(pattern) > 64 || len(topic) > 128 || !utf8.ValidString(pattern) || !utf8.ValidString(topic) {
			t.Skip()
		}
		if got, want := Match(pattern, topic), referenceMatch(pattern, topic); got != want {
			t.Fatalf("Match(%q, %q) = %v, reference says %v", pattern, topic, got, want)
		}
	})
}
