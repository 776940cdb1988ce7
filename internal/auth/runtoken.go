// Package auth makes and checks run tokens: bearer tokens that let a
// browser follow one flow run and nothing else. A run token is
// "rt1.{base64url runId}.{expiry unix seconds}.{base64url HMAC-SHA256}",
// signed with the instance's auth token, so every instance that shares
// NVENT_AUTH_TOKEN accepts it and nothing needs storing.
package auth

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"strconv"
	"strings"
	"time"

	"github.com/nvent/nvent/internal/domain"
)

const prefix = "rt1."

// RunTokens issues and verifies run tokens.
type RunTokens struct {
	key []byte
	now func() time.Time
}

// NewRunTokens returns run tokens signed with secret (the auth token).
func NewRunTokens(secret string) *RunTokens {
	return &RunTokens{key: []byte("nvent run token\x00" + secret), now: time.Now}
}

func (r *RunTokens) sign(payload string) string {
	m := hmac.New(sha256.New, r.key)
	m.Write([]byte(payload))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// Issue returns a token for runID valid for ttl, and when it expires.
func (r *RunTokens) Issue(runID string, ttl time.Duration) (string, time.Time) {
	exp := r.now().Add(ttl).Truncate(time.Second)
	payload := prefix + base64.RawURLEncoding.EncodeToString([]byte(runID)) + "." + strconv.FormatInt(exp.Unix(), 10)
	return payload + "." + r.sign(payload), exp.UTC()
}

// IsRunToken reports whether tok has the form of a run token.
func IsRunToken(tok string) bool { return strings.HasPrefix(tok, prefix) }

// Verify returns the run a token allows, or an unauthorized error for a
// malformed, forged or expired token. The signature is compared in constant
// time.
func (r *RunTokens) Verify(tok string) (string, error) {
	bad := domain.Errorf(domain.CodeUnauthorized, "invalid run token")
	i := strings.LastIndexByte(tok, '.')
	if !IsRunToken(tok) || i < 0 {
		return "", bad
	}
	payload, sig := tok[:i], tok[i+1:]
	if !hmac.Equal([]byte(sig), []byte(r.sign(payload))) {
		return "", bad
	}
	parts := strings.Split(strings.TrimPrefix(payload, prefix), ".")
	if len(parts) != 2 {
		return "", bad
	}
	run, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		return "", bad
	}
	exp, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil {
		return "", bad
	}
	if r.now().Unix() >= exp {
		return "", domain.Errorf(domain.CodeUnauthorized, "run token expired")
	}
	return string(run), nil
}
