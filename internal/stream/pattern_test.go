package stream

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
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

// pathological returns patterns that make backtracking matchers take
// quadratic or exponential time against a long run of one byte.
func pathological(n int) []string {
	return []string{
		strings.Repeat("*a", 1000) + "*b",
		"*" + strings.Repeat("a", 5000) + "b*",
		strings.Repeat("a*", 3000) + "b",
		"*" + strings.Repeat("a", n-1) + "b",
		strings.Repeat("*", 5000),
		strings.Repeat("*ab", 2000) + "*",
		"*" + strings.Repeat("aaab*", 500),
	}
}

// TestMatchIsLinear counts the byte comparisons of pathological patterns
// (thousands of '*', long literal pieces) against topics of up to a
// megabyte: never more than 2·len(topic) + len(pattern), so the work grows
// linearly with the topic whatever the pattern. A backtracking matcher
// makes about len(topic)² comparisons on the same inputs. (That the
// answers are right is FuzzMatch's and TestMatch's to show.)
func TestMatchIsLinear(t *testing.T) {
	for _, n := range []int{1 << 10, 1 << 16, 1 << 20} {
		topics := []string{strings.Repeat("a", n), strings.Repeat("ab", n/2), strings.Repeat("aaab", n/4) + "x"}
		for _, s := range pathological(min(n, 200_000)) {
			p, err := CompilePattern(s)
			if err != nil {
				t.Fatal(err)
			}
			for _, topic := range topics {
				_, ops := p.match(topic)
				if bound := 2*len(topic) + len(s); ops > bound {
					t.Errorf("pattern of %d bytes, %d stars, topic of %d bytes: %d comparisons, more than %d", len(s), p.Stars(), len(topic), ops, bound)
				}
			}
		}
	}
}

// BenchmarkMatchPathological reports ns/op and bytes of topic per second
// for the worst patterns on a 1 MiB topic; run it at -benchtime=1x and
// 10x to see the time per topic byte stay flat.
func BenchmarkMatchPathological(b *testing.B) {
	topic := strings.Repeat("a", 1<<20)
	for i, s := range pathological(200_000) {
		p, err := CompilePattern(s)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("pattern%d-%dstars", i, p.Stars()), func(b *testing.B) {
			b.SetBytes(int64(len(topic)))
			for b.Loop() {
				p.Match(topic)
			}
		})
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
		p, err := CompilePattern(pattern)
		if err != nil {
			t.Fatal(err)
		}
		got, ops := p.match(topic)
		if want := referenceMatch(pattern, topic); got != want {
			t.Fatalf("Match(%q, %q) = %v, reference says %v", pattern, topic, got, want)
		}
		if bound := 2*len(topic) + len(pattern); ops > bound {
			t.Fatalf("Match(%q, %q) made %d comparisons, more than %d", pattern, topic, ops, bound)
		}
	})
}
