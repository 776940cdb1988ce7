package config_test

import (
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/nvent/nvent/internal/config"
)

// FuzzLoad feeds arbitrary YAML files (and one environment variable) to
// Load: it never panics or hangs; it either fails with an error or returns
// a configuration that Validate accepts; and Redacted never shows the auth
// token or a URL's password.
func FuzzLoad(f *testing.F) {
	for _, s := range [][2]string{
		{"store: postgres\npostgres_url: postgres://bob:hunter2@db/x\nclient_messages: true\n", ""},
		{"store: memory\nstream: redis\nredis_url: redis://:hunter2@r:6379/0\nauth_token: tok3n\nhttp_addr: 0.0.0.0:8080\n", ""},
		{"store: postgres\npostgres_url: host=db user=bob password=hunter2 dbname=x\n", ""},
		{"store: postgres\n", "NVENT_POSTGRES_URL=postgres://bob@db/x?password=hunter2&sslmode=disable"},
		{"max_batch_events: 1001\n", ""},
		{"live_max_pattern_stars: -1\n", ""},
		{"shutdown_timeout: 1y\n", ""},
		{"http_read_header_timeout: 1ns\nmax_page_size: 1\n", "NVENT_MAX_PAGE_SIZE=1000"},
		{"stor: memory\n", ""},
		{"store: [\n", ""},
		{"a: &a [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: [*b, *b, *b, *b, *b, *b, *b, *b, *b]\n", ""},
		{"store: !!binary aGVsbG8=\n", ""},
		{"max_body_bytes: 99999999999999999999999\n", ""},
		{"---\nstore: memory\n---\nstore: sqlite\n", ""},
		{"store_sync: maybe\n", "NVENT_STORE_SYNC=false"},
		{"\xff\xfe", "NVENT_LOG_LEVEL=debug"},
	} {
		f.Add([]byte(s[0]), s[1])
	}
	path := filepath.Join(f.TempDir(), "nvent.yaml") // each fuzzing process runs one input at a time
	f.Fuzz(func(t *testing.T, file []byte, env string) {
		if err := os.WriteFile(path, file, 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := config.Load(path, []string{env})
		if err != nil {
			if err.Error() == "" {
				t.Fatal("an error without a message")
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("Load returned a configuration that Validate refuses: %v", err)
		}
		r := c.Redacted()
		if c.AuthToken != "" && r["auth_token"] != "[redacted]" {
			t.Fatalf("Redacted shows auth_token as %q", r["auth_token"])
		}
		for key, orig := range map[string]string{"postgres_url": c.PostgresURL, "redis_url": c.RedisURL, "nats_url": c.NATSURL, "amqp_url": c.AMQPURL, "webhook_url": c.WebhookURL} {
			if p := passwordIn(orig); p != "" && strings.Count(r[key], p) >= strings.Count(orig, p) {
				t.Fatalf("Redacted shows %s %q as %q: the password %q is still there", key, orig, r[key], p)
			}
		}
	})
}

// passwordIn returns the password a connection string carries: in a URL's
// user info, or as password=… (a query parameter, or a key/value
// connection string).
func passwordIn(s string) string {
	if u, err := url.Parse(s); err == nil && u.User != nil {
		if p, ok := u.User.Password(); ok && p != "" && strings.Contains(s, ":"+p+"@") {
			return p
		}
	}
	if m := regexp.MustCompile(`\bpassword=([^\s&']+)`).FindStringSubmatch(s); m != nil {
		return m[1]
	}
	return ""
}

func TestRedactedHidesPasswordsInEveryForm(t *testing.T) {
	for _, pg := range []string{
		"postgres://bob:hunter2@db:5432/x",
		"postgres://bob@db:5432/x?sslmode=disable&password=hunter2",
		"host=db user=bob password=hunter2 dbname=x",
		"host=db user=bob password='hunter2 with spaces' dbname=x",
	} {
		c, err := config.Load("", []string{"NVENT_STORE=postgres", "NVENT_POSTGRES_URL=" + pg})
		if err != nil {
			t.Fatal(err)
		}
		if got := c.Redacted()["postgres_url"]; strings.Contains(got, "hunter2") || !strings.Contains(got, "[redacted]") {
			t.Errorf("%q redacted as %q", pg, got)
		}
	}
}

func TestLoadRefusesAHugeFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nvent.yaml")
	body := "store: memory\n# " + strings.Repeat("x", config.MaxFileBytes) + "\n"
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := config.Load(path, nil); err == nil || !strings.Contains(err.Error(), "the limit is") {
		t.Fatalf("Load of a %d-byte file: %v", len(body), err)
	}
	small := filepath.Join(t.TempDir(), "small.yaml")
	if err := os.WriteFile(small, []byte("store: memory\n# "+strings.Repeat("x", config.MaxFileBytes-32)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if c, err := config.Load(small, nil); err != nil || c.Store != "memory" {
		t.Fatalf("Load of a file just under the limit: %+v, %v", c.Store, err)
	}
}
