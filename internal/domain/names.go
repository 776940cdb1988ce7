package domain

import (
	"strings"
)

// MaxNameLen is the longest subject, collection, document id or key.
const MaxNameLen = 256

// MaxTypeLen is the longest event type.
const MaxTypeLen = 128

// validNameByte reports whether c may appear in a subject, collection,
// document id or key: [A-Za-z0-9._:@-].
func validNameByte(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	case c == '.', c == '_', c == ':', c == '@', c == '-':
		return true
	}
	return false
}

func validateName(kind, s string, max int) error {
	if s == "" {
		return Errorf(CodeInvalidInput, "%s is empty", kind)
	}
	if len(s) > max {
		return Errorf(CodeInvalidInput, "%s is %d bytes long; the limit is %d", kind, len(s), max)
	}
	for i := 0; i < len(s); i++ {
		if !validNameByte(s[i]) {
			if s[i] == '*' {
				return Errorf(CodeInvalidInput, "%s %q holds '*', which only patterns may use", kind, truncate(s))
			}
			return Errorf(CodeInvalidInput, "%s %q holds %q at byte %d; allowed are A-Z a-z 0-9 . _ : @ -", kind, truncate(s), rune(s[i]), i)
		}
	}
	return nil
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// ValidateSubject checks a subject: 1 to 256 bytes of [A-Za-z0-9._:@-].
func ValidateSubject(subject string) error { return validateName("subject", subject, MaxNameLen) }

// ValidateCollection checks a document collection name (same rule as a subject).
func ValidateCollection(c string) error { return validateName("collection", c, MaxNameLen) }

// ValidateDocumentID checks a document id (same rule as a subject).
func ValidateDocumentID(id string) error { return validateName("document id", id, MaxNameLen) }

// ValidateKey checks a key-value key (same rule as a subject).
func ValidateKey(key string) error { return validateName("key", key, MaxNameLen) }

// ValidateEventID checks a client-chosen event id (same rule as a subject).
func ValidateEventID(id string) error { return validateName("event id", id, MaxNameLen) }

// ValidateEventType checks an event type: 1 to 128 bytes of [A-Za-z0-9._:@-].
func ValidateEventType(t string) error { return validateName("event type", t, MaxTypeLen) }

// FlowSubjectPrefix starts the subject of every flow run: nq:flow:{runId}.
const FlowSubjectPrefix = "nq:flow:"

// FlowSubject returns the subject that holds the events of run runID.
func FlowSubject(runID string) string { return FlowSubjectPrefix + runID }

// RunIDFromSubject returns the {runId} of a subject of the form
// "…:flow:{runId}" (such as nq:flow:abc), or "" when the subject is not a
// flow subject. For nq:flow:{runId} it is everything after the prefix, so
// that it is the run id FlowSubject was given even when that holds
// ":flow:" itself (nq:flow:flow:x is run flow:x, not run x).
func RunIDFromSubject(subject string) string {
	if id, ok := strings.CutPrefix(subject, FlowSubjectPrefix); ok {
		return id
	}
	i := strings.LastIndex(subject, ":flow:")
	if i < 0 {
		return ""
	}
	return subject[i+len(":flow:"):]
}
