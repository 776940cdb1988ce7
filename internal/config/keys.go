package config

import (
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Keys lists every option's YAML key, sorted.
func Keys() []string {
	t := reflect.TypeFor[Config]()
	keys := make([]string, 0, t.NumField())
	for f := range t.Fields() {
		keys = append(keys, f.Tag.Get("koanf"))
	}
	slices.Sort(keys)
	return keys
}

// EnvName returns the environment variable of a YAML key.
func EnvName(key string) string { return EnvPrefix + strings.ToUpper(key) }

// toMap flattens c into key → value, durations as strings so that they read
// back through the same decoder as the file and the environment.
func toMap(c Config) map[string]any {
	v := reflect.ValueOf(c)
	t := v.Type()
	m := make(map[string]any, t.NumField())
	for i := range t.NumField() {
		f := v.Field(i).Interface()
		if d, ok := f.(time.Duration); ok {
			f = d.String()
		}
		m[t.Field(i).Tag.Get("koanf")] = f
	}
	return m
}

// secretKeys name the options whose values Redacted hides.
var secretKeys = []string{"amqp_url", "auth_token", "nats_url", "postgres_url", "redis_url", "webhook_url"}

// Redacted returns the configuration as key → printable value with secrets
// hidden: tokens entirely, passwords inside URLs.
func (c Config) Redacted() map[string]string {
	out := map[string]string{}
	for k, v := range toMap(c) {
		s := fmt.Sprint(v)
		if slices.Contains(secretKeys, k) && s != "" {
			s = redact(k, s)
		}
		out[k] = s
	}
	return out
}

func redact(key, s string) string {
	if key == "auth_token" {
		return "[redacted]"
	}
	// password=… in a query string or a key/value connection string
	// ("host=db password=secret"), quoted or not.
	s = passwordParam.ReplaceAllString(s, "${1}[redacted]")
	// scheme://user:password@host → scheme://user:[redacted]@host
	at := strings.LastIndex(s, "@")
	scheme := strings.Index(s, "://")
	if at < 0 || scheme < 0 || at < scheme {
		return s
	}
	creds := s[scheme+3 : at]
	if user, _, ok := strings.Cut(creds, ":"); ok {
		return s[:scheme+3] + user + ":[redacted]" + s[at:]
	}
	return s
}

// passwordParam finds the value of a password parameter.
var passwordParam = regexp.MustCompile(`(?i)(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'?|[^\s&]*)`)
