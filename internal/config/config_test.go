package config_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nvent/nvent/internal/config"
)

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "nvent.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDefaultsWorkWithNothingSet(t *testing.T) {
	c, err := config.Load("", nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Store != "sqlite" || c.SQLitePath != "./data/nvent.db" || c.Stream != "memory" || c.HTTPAddr != "127.0.0.1:8080" ||
		!c.StoreSync || !c.FlowEvents || c.ClientMessages || c.InstanceID == "" {
		t.Fatalf("defaults = %+v", c)
	}
	c2, _ := config.Load("", nil)
	if c2.InstanceID == c.InstanceID {
		t.Fatalf("two loads share instance id %q; want a random one per process", c.InstanceID)
	}
}

func TestEnvironmentWinsOverFile(t *testing.T) {
	p := writeFile(t, "store: postgres\npostgres_url: postgres://file\nclient_messages: true\nlog_level: debug\nshutdown_timeout: 3s\n")
	c, err := config.Load(p, []string{"NVENT_POSTGRES_URL=postgres://env", "NVENT_LOG_LEVEL=warn", "NVENT_STORE_SYNC=false", "PATH=/bin", "NVENT_TEST_POSTGRES_URL=ignored"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Store != "postgres" || c.PostgresURL != "postgres://env" || !c.ClientMessages || c.LogLevel != "warn" || c.StoreSync || c.ShutdownTimeout != 3*time.Second {
		t.Fatalf("merged = %+v", c)
	}
}

func TestRejectsWhatCannotWork(t *testing.T) {
	for name, tc := range map[string]struct {
		file string
		env  []string
		want string
	}{
		"unknown key in file":         {file: "stor: memory\n", want: `unknown key "stor"`},
		"broken YAML":                 {file: "store: [\n", want: "error reading config file"},
		"unknown store":               {env: []string{"NVENT_STORE=mongo"}, want: "store must be"},
		"postgres without url":        {env: []string{"NVENT_STORE=postgres"}, want: "NVENT_POSTGRES_URL"},
		"redis without url":           {env: []string{"NVENT_STREAM=redis"}, want: "NVENT_REDIS_URL"},
		"not a bool":                  {env: []string{"NVENT_STORE_SYNC=maybe"}, want: "store_sync"},
		"public address without auth": {env: []string{"NVENT_HTTP_ADDR=0.0.0.0:8080"}, want: "NVENT_AUTH_TOKEN"},
		"bad instance id":             {env: []string{"NVENT_INSTANCE_ID=a b"}, want: "instance_id"},
	} {
		t.Run(name, func(t *testing.T) {
			path := ""
			if tc.file != "" {
				path = writeFile(t, tc.file)
			}
			_, err := config.Load(path, tc.env)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
	if _, err := config.Load("", []string{"NVENT_HTTP_ADDR=0.0.0.0:8080", "NVENT_AUTH_TOKEN=s3cret"}); err != nil {
		t.Fatalf("public address with a token: %v", err)
	}
}

func TestEveryKeyHasBothForms(t *testing.T) {
	for _, key := range config.Keys() {
		if key == "" || strings.ToLower(key) != key {
			t.Fatalf("field without a lower-case koanf tag: %q", key)
		}
		if !strings.HasPrefix(config.EnvName(key), "NVENT_") {
			t.Fatal(key)
		}
	}
}

func TestRedactedHidesSecrets(t *testing.T) {
	c, err := config.Load("", []string{"NVENT_AUTH_TOKEN=tok3n", "NVENT_STORE=postgres", "NVENT_POSTGRES_URL=postgres://bob:hunter2@db:5432/x"})
	if err != nil {
		t.Fatal(err)
	}
	r := c.Redacted()
	if r["auth_token"] != "[redacted]" || r["postgres_url"] != "postgres://bob:[redacted]@db:5432/x" {
		t.Fatalf("redacted = %v", r)
	}
	for k, v := range r {
		if strings.Contains(v, "tok3n") || strings.Contains(v, "hunter2") {
			t.Fatalf("%s leaks a secret: %s", k, v)
		}
	}
}

func TestLimitsHaveSafeDefaultsAndBounds(t *testing.T) {
	c, err := config.Load("", nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.MaxBodyBytes != 1<<20 || c.MaxBatchEvents != 1000 || c.MaxEventDataBytes != 256<<10 || c.MaxSubjectBytes != 256 ||
		c.MaxKeyBytes != 256 || c.MaxPageSize != 1000 || c.LiveMaxConnections != 10_000 || c.LiveMaxSubscriptions != 100 ||
		c.LiveMaxPatternBytes != 512 || c.LiveMaxPatternStars != 16 || c.HTTPReadHeaderTimeout != 10*time.Second ||
		c.HTTPIdleTimeout != 120*time.Second || c.HTTPBodyTimeout != 30*time.Second || c.HTTPMaxHeaderBytes != 64<<10 {
		t.Fatalf("limits = %+v", c)
	}
	for env, want := range map[string]string{
		"NVENT_MAX_BATCH_EVENTS=1001":       "max_batch_events",
		"NVENT_MAX_SUBJECT_BYTES=257":       "max_subject_bytes",
		"NVENT_MAX_KEY_BYTES=0":             "max_key_bytes",
		"NVENT_MAX_PAGE_SIZE=1001":          "max_page_size",
		"NVENT_MAX_EVENT_DATA_BYTES=-1":     "max_event_data_bytes",
		"NVENT_LIVE_MAX_SUBSCRIPTIONS=0":    "live_max_subscriptions",
		"NVENT_LIVE_MAX_PATTERN_BYTES=0":    "live_max_pattern_bytes",
		"NVENT_LIVE_MAX_PATTERN_STARS=0":    "live_max_pattern_stars",
		"NVENT_HTTP_READ_HEADER_TIMEOUT=0s": "http_read_header_timeout",
		"NVENT_HTTP_IDLE_TIMEOUT=0s":        "http_idle_timeout",
		"NVENT_HTTP_BODY_TIMEOUT=0s":        "http_body_timeout",
		"NVENT_HTTP_MAX_HEADER_BYTES=100":   "http_max_header_bytes",
	} {
		if _, err := config.Load("", []string{env}); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want an error naming %s", env, err, want)
		}
	}
	c, err = config.Load("", []string{"NVENT_MAX_BATCH_EVENTS=1000", "NVENT_MAX_SUBJECT_BYTES=1", "NVENT_LIVE_MAX_PATTERN_STARS=1"})
	if err != nil || c.MaxBatchEvents != 1000 || c.MaxSubjectBytes != 1 || c.LiveMaxPatternStars != 1 {
		t.Fatalf("limits at their bounds: %+v, %v", c, err)
	}
}

// TestEveryKeyIsDocumented: each option has its row in the README's
// configuration table, with both of its forms.
func TestEveryKeyIsDocumented(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range config.Keys() {
		if row := "| `" + config.EnvName(key) + "` | `" + key + "` |"; !strings.Contains(string(readme), row) {
			t.Errorf("README.md has no configuration row %q", row)
		}
	}
}
