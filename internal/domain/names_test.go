package domain

import "testing"

func TestRunIDFromSubject(t *testing.T) {
	for subject, want := range map[string]string{
		"nq:flow:r1":         "r1",
		"nq:flow:flow:x":     "flow:x", // run "flow:x", not run "x"
		"nq:flow:a:flow:b":   "a:flow:b",
		"tenant:flow:r2":     "r2",
		"orders:42":          "",
		"nq:flow:":           "",
		"x:flow:a:flow:b":    "b",
		"flow:r3":            "",
		"nq:flowing:r4":      "",
		FlowSubject("r:5"):   "r:5",
		FlowSubject("flow:"): "flow:",
	} {
		if got := RunIDFromSubject(subject); got != want {
			t.Errorf("RunIDFromSubject(%q) = %q, want %q", subject, got, want)
		}
	}
}
