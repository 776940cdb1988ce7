package auth

import (
	"strings"
	"testing"
	"time"
)

func TestRunTokens(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	r := NewRunTokens("s3cret")
	r.now = func() time.Time { return now }
	tok, exp := r.Issue("run-1", time.Hour)
	if !exp.Equal(now.Add(time.Hour)) {
		t.Fatalf("expiry %v", exp)
	}
	if run, err := r.Verify(tok); err != nil || run != "run-1" {
		t.Fatalf("Verify = %q, %v", run, err)
	}
	other := NewRunTokens("another secret")
	other.now = r.now
	if _, err := other.Verify(tok); err == nil {
		t.Fatal("a token signed with another secret verified")
	}
	forged := strings.Replace(tok, tok[4:12], "cnVuLTI", 1) // another run id, same signature
	if _, err := r.Verify(forged); err == nil {
		t.Fatal("a token with a changed run id verified")
	}
	for _, bad := range []string{"", "rt1.", "rt1.x.y.z", "s3cret", tok + "x", tok[:len(tok)-2]} {
		if _, err := r.Verify(bad); err == nil {
			t.Fatalf("%q verified", bad)
		}
	}
	now = now.Add(time.Hour)
	if _, err := r.Verify(tok); err == nil {
		t.Fatal("an expired token verified")
	}
}
