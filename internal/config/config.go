// Package config loads nvent's configuration from, in rising precedence,
// built-in defaults, an optional YAML file and NVENT_* environment variables.
//
// Every option has both forms: the YAML key is the variable's name without
// the NVENT_ prefix, in lower case (NVENT_HTTP_ADDR ↔ http_addr).
package config

import (
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/confmap"
	"github.com/knadh/koanf/providers/file"
	"github.com/knadh/koanf/v2"

	"github.com/nvent/nvent/internal/domain"
)

// EnvPrefix starts every environment variable nvent reads.
const EnvPrefix = "NVENT_"

// Config is the whole effective configuration. Field tags name the YAML key;
// the environment variable is NVENT_ plus the key in upper case.
type Config struct {
	HTTPAddr string `koanf:"http_addr"`
	// ShutdownTimeout bounds a graceful stop.
	ShutdownTimeout time.Duration `koanf:"shutdown_timeout"`

	Store               string `koanf:"store"` // memory | sqlite | postgres | redis
	SQLitePath          string `koanf:"sqlite_path"`
	PostgresURL         string `koanf:"postgres_url"`
	PostgresSchema      string `koanf:"postgres_schema"`
	PostgresAutomigrate bool   `koanf:"postgres_automigrate"`
	PostgresMaxConns    int32  `koanf:"postgres_max_conns"`

	Stream   string `koanf:"stream"` // memory | redis | nats | amqp | postgres
	RedisURL string `koanf:"redis_url"`
	// NATSURL is the NATS server (with JetStream) of the nats stream.
	NATSURL string `koanf:"nats_url"`
	// AMQPURL is the RabbitMQ (AMQP 0-9-1) broker of the amqp stream.
	AMQPURL string `koanf:"amqp_url"`
	// StreamPrefix namespaces the physical streams (Redis keys); instances
	// that should see each other share it.
	StreamPrefix string `koanf:"stream_prefix"`
	// RedisStorePrefix starts every key of the redis store (store=redis);
	// instances that share a store share it.
	RedisStorePrefix string `koanf:"redis_store_prefix"`
	// CacheSize is how many documents and keys the read cache holds.
	CacheSize int `koanf:"cache_size"`
	// LiveQueueSize is how many messages an SSE or WebSocket connection may
	// have waiting before it is cut as a slow client.
	LiveQueueSize int `koanf:"live_queue_size"`
	// LiveMaxConnections caps the SSE and WebSocket connections of one
	// instance.
	LiveMaxConnections int `koanf:"live_max_connections"`

	// RelayStallThreshold: /readyz fails when the relay that leads is this
	// far behind the oldest commit it has not published.
	RelayStallThreshold time.Duration `koanf:"relay_stall_threshold"`

	// WebhookURL, when set, receives every flow.completed event (the
	// webhook wiring); WebhookTimeout bounds one delivery.
	WebhookURL     string        `koanf:"webhook_url"`
	WebhookTimeout time.Duration `koanf:"webhook_timeout"`

	InstanceID string `koanf:"instance_id"`

	StoreSync      bool `koanf:"store_sync"`
	FlowEvents     bool `koanf:"flow_events"`
	ClientMessages bool `koanf:"client_messages"`

	AuthToken string `koanf:"auth_token"`

	LogLevel  string `koanf:"log_level"`  // debug | info | warn | error
	LogFormat string `koanf:"log_format"` // text | json

	// MaxBodyBytes caps a request body; larger ones get 413.
	MaxBodyBytes int64 `koanf:"max_body_bytes"`

	// Hostile-input limits (see the README's "Security model").
	// HTTPReadHeaderTimeout drops a connection whose request headers have
	// not arrived in time (slow-loris); HTTPIdleTimeout closes idle
	// keep-alive connections; HTTPBodyTimeout bounds reading one body;
	// HTTPMaxHeaderBytes caps a request's headers (and URL).
	HTTPReadHeaderTimeout time.Duration `koanf:"http_read_header_timeout"`
	HTTPIdleTimeout       time.Duration `koanf:"http_idle_timeout"`
	HTTPBodyTimeout       time.Duration `koanf:"http_body_timeout"`
	HTTPMaxHeaderBytes    int           `koanf:"http_max_header_bytes"`
	// MaxBatchEvents caps the events of one append (at most 1000);
	// MaxEventDataBytes the data of one event (413 beyond either).
	MaxBatchEvents    int `koanf:"max_batch_events"`
	MaxEventDataBytes int `koanf:"max_event_data_bytes"`
	// MaxSubjectBytes caps subjects; MaxKeyBytes keys, collections and
	// document ids (at most 256 each; 400 beyond). MaxPageSize caps the
	// limit of one page of documents or runs (at most 1000; 400 beyond).
	MaxSubjectBytes int `koanf:"max_subject_bytes"`
	MaxKeyBytes     int `koanf:"max_key_bytes"`
	MaxPageSize     int `koanf:"max_page_size"`
	// LiveMaxSubscriptions caps the subscriptions of one WebSocket;
	// LiveMaxPatternBytes and LiveMaxPatternStars the length and the '*' of
	// a topic pattern a client may follow.
	LiveMaxSubscriptions int `koanf:"live_max_subscriptions"`
	LiveMaxPatternBytes  int `koanf:"live_max_pattern_bytes"`
	LiveMaxPatternStars  int `koanf:"live_max_pattern_stars"`
}

// MaxFileBytes caps the size of a configuration file.
const MaxFileBytes = 1 << 20

// Defaults returns the configuration nvent runs with when nothing is set:
// an embedded SQLite store and an in-memory stream on loopback.
func Defaults() Config {
	return Config{
		HTTPAddr:            "127.0.0.1:8080",
		ShutdownTimeout:     15 * time.Second,
		Store:               "sqlite",
		SQLitePath:          "./data/nvent.db",
		PostgresSchema:      "public",
		PostgresAutomigrate: true,
		PostgresMaxConns:    16,
		Stream:              "memory",
		StreamPrefix:        "nvent:",
		RedisStorePrefix:    "nvent:store:",
		CacheSize:           10_000,
		LiveQueueSize:       256,
		LiveMaxConnections:  10_000,
		WebhookTimeout:      10 * time.Second,
		RelayStallThreshold: time.Minute,
		StoreSync:           true,
		FlowEvents:          true,
		ClientMessages:      false,
		LogLevel:            "info",
		LogFormat:           "text",
		MaxBodyBytes:        1 << 20,

		HTTPReadHeaderTimeout: 10 * time.Second,
		HTTPIdleTimeout:       120 * time.Second,
		HTTPBodyTimeout:       30 * time.Second,
		HTTPMaxHeaderBytes:    64 << 10,
		MaxBatchEvents:        domain.MaxBatch,
		MaxEventDataBytes:     domain.DefaultMaxEventDataBytes,
		MaxSubjectBytes:       domain.MaxNameLen,
		MaxKeyBytes:           domain.MaxNameLen,
		MaxPageSize:           domain.MaxListLimit,
		LiveMaxSubscriptions:  100,
		LiveMaxPatternBytes:   512,
		LiveMaxPatternStars:   16,
	}
}

// Load builds the configuration from the defaults, the YAML file at path
// (skipped when path is empty) and the NVENT_* entries of environ (as
// os.Environ returns them). A key in the file that nvent does not know is an
// error, so that a typo does not pass silently. An empty instance id is
// replaced by a random one.
func Load(path string, environ []string) (Config, error) {
	k := koanf.New(".")
	if err := k.Load(confmap.Provider(toMap(Defaults()), "."), nil); err != nil {
		return Config{}, fmt.Errorf("error loading defaults: %w", err)
	}
	if path != "" {
		if fi, err := os.Stat(path); err == nil && fi.Size() > MaxFileBytes {
			return Config{}, fmt.Errorf("config file %s is %d bytes; the limit is %d", path, fi.Size(), MaxFileBytes)
		}
		fk := koanf.New(".")
		if err := fk.Load(file.Provider(path), yaml.Parser()); err != nil {
			return Config{}, fmt.Errorf("error reading config file %s: %w", path, err)
		}
		known := Keys()
		for _, key := range fk.Keys() {
			if !slices.Contains(known, key) {
				return Config{}, fmt.Errorf("config file %s: unknown key %q (known keys: %s)", path, key, strings.Join(known, ", "))
			}
		}
		if err := k.Merge(fk); err != nil {
			return Config{}, fmt.Errorf("error merging config file %s: %w", path, err)
		}
	}
	if err := k.Load(confmap.Provider(envMap(environ), "."), nil); err != nil {
		return Config{}, fmt.Errorf("error loading environment: %w", err)
	}
	var c Config
	if err := k.UnmarshalWithConf("", &c, koanf.UnmarshalConf{Tag: "koanf"}); err != nil {
		return Config{}, fmt.Errorf("error decoding configuration: %w", err)
	}
	if c.InstanceID == "" {
		c.InstanceID = "nvent-" + domain.NewID()[24:]
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// FromEnv is Load with the process environment.
func FromEnv(path string) (Config, error) { return Load(path, os.Environ()) }

// envMap returns the NVENT_* variables of environ keyed by their YAML name.
// Variables that name no option (NVENT_TEST_…) are ignored.
func envMap(environ []string) map[string]any {
	known := Keys()
	m := map[string]any{}
	for _, kv := range environ {
		name, value, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(name, EnvPrefix) {
			continue
		}
		key := strings.ToLower(strings.TrimPrefix(name, EnvPrefix))
		if slices.Contains(known, key) {
			m[key] = value
		}
	}
	return m
}

// Validate reports the first setting that cannot work.
func (c Config) Validate() error {
	var errs []error
	check := func(ok bool, format string, args ...any) {
		if !ok {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	check(slices.Contains([]string{"memory", "sqlite", "postgres", "redis"}, c.Store), "store must be memory, sqlite, postgres or redis, not %q", c.Store)
	check(c.Store != "redis" || c.RedisURL != "", "store redis needs redis_url (NVENT_REDIS_URL)")
	check(c.Store != "sqlite" || c.SQLitePath != "", "store sqlite needs sqlite_path (NVENT_SQLITE_PATH)")
	check(c.Store != "postgres" || c.PostgresURL != "", "store postgres needs postgres_url (NVENT_POSTGRES_URL)")
	check(c.PostgresMaxConns > 0, "postgres_max_conns must be positive")
	check(slices.Contains([]string{"memory", "redis", "nats", "amqp", "postgres"}, c.Stream), "stream must be memory, redis, nats, amqp or postgres, not %q", c.Stream)
	check(c.Stream != "redis" || c.RedisURL != "", "stream redis needs redis_url (NVENT_REDIS_URL)")
	check(c.Stream != "nats" || c.NATSURL != "", "stream nats needs nats_url (NVENT_NATS_URL)")
	check(c.Stream != "amqp" || c.AMQPURL != "", "stream amqp needs amqp_url (NVENT_AMQP_URL)")
	check(c.Stream != "postgres" || c.PostgresURL != "", "stream postgres needs postgres_url (NVENT_POSTGRES_URL)")
	check(slices.Contains([]string{"debug", "info", "warn", "error"}, c.LogLevel), "log_level must be debug, info, warn or error, not %q", c.LogLevel)
	check(slices.Contains([]string{"text", "json"}, c.LogFormat), "log_format must be text or json, not %q", c.LogFormat)
	check(c.MaxBodyBytes > 0, "max_body_bytes must be positive")
	check(c.HTTPReadHeaderTimeout > 0, "http_read_header_timeout must be positive")
	check(c.HTTPIdleTimeout > 0, "http_idle_timeout must be positive")
	check(c.HTTPBodyTimeout > 0, "http_body_timeout must be positive")
	check(c.HTTPMaxHeaderBytes >= 4096, "http_max_header_bytes must be at least 4096")
	check(c.MaxBatchEvents > 0 && c.MaxBatchEvents <= domain.MaxBatch, "max_batch_events must be between 1 and %d", domain.MaxBatch)
	check(c.MaxEventDataBytes > 0, "max_event_data_bytes must be positive")
	check(c.MaxSubjectBytes > 0 && c.MaxSubjectBytes <= domain.MaxNameLen, "max_subject_bytes must be between 1 and %d", domain.MaxNameLen)
	check(c.MaxKeyBytes > 0 && c.MaxKeyBytes <= domain.MaxNameLen, "max_key_bytes must be between 1 and %d", domain.MaxNameLen)
	check(c.MaxPageSize > 0 && c.MaxPageSize <= domain.MaxListLimit, "max_page_size must be between 1 and %d", domain.MaxListLimit)
	check(c.LiveMaxSubscriptions > 0, "live_max_subscriptions must be positive")
	check(c.LiveMaxPatternBytes > 0, "live_max_pattern_bytes must be positive")
	check(c.LiveMaxPatternStars > 0, "live_max_pattern_stars must be positive")
	check(c.StreamPrefix != "", "stream_prefix must not be empty")
	check(c.CacheSize >= 0, "cache_size must not be negative")
	check(c.LiveQueueSize > 0, "live_queue_size must be positive")
	check(c.LiveMaxConnections > 0, "live_max_connections must be positive")
	check(c.WebhookTimeout > 0, "webhook_timeout must be positive")
	check(c.RelayStallThreshold > 0, "relay_stall_threshold must be positive")
	check(c.ShutdownTimeout > 0, "shutdown_timeout must be positive")
	check(domain.ValidateEventID(c.InstanceID) == nil, "instance_id %q must be 1-256 characters of A-Z a-z 0-9 . _ : @ -", c.InstanceID)
	if host, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
		errs = append(errs, fmt.Errorf("http_addr %q: %w", c.HTTPAddr, err))
	} else {
		check(c.AuthToken != "" || IsLoopback(host), "http_addr %s is not a loopback address: set auth_token (NVENT_AUTH_TOKEN) to listen there", c.HTTPAddr)
	}
	return errors.Join(errs...)
}

// IsLoopback reports whether host (a name or IP, no port) only accepts local
// connections. An empty host or 0.0.0.0 listens everywhere.
func IsLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
