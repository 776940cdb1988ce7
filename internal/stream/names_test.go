package stream

import (
	"strings"
	"testing"
)

// TestBrokerNames checks the mapping of physical streams and groups onto
// broker names: what each broker accepts, deterministic, injective, and
// within its length limit.
func TestBrokerNames(t *testing.T) {
	for in, want := range map[string]string{
		"nvent:store-sync": "nvent_3Astore-sync",
		"a_b":              "a_5Fb", // '_' is the escape character, so it is escaped too
		"a.b*c>d e":        "a_2Eb_2Ac_3Ed_20e",
	} {
		if got := NATSStreamName(in); got != want {
			t.Errorf("NATSStreamName(%q) = %q, want %q", in, got, want)
		}
	}
	if got := AMQPExchange("nvent:store-sync"); got != "nvent:store-sync" {
		t.Errorf("AMQPExchange kept nothing of the readable name: %q", got)
	}
	if got := AMQPGroupQueue("nvent:flow", "flow-runs", "flow:event:*"); got != "nvent:flow.g.flow-runs_40flow:event:_2A" {
		t.Errorf("AMQPGroupQueue = %q", got)
	}
	long1, long2 := strings.Repeat("x", 300)+"1", strings.Repeat("x", 300)+"2"
	for name, f := range map[string]func(string) string{"nats": NATSStreamName, "amqp": AMQPExchange, "postgres": PostgresTable} {
		a, b := f(long1), f(long2)
		if a == b {
			t.Errorf("%s: two long names map to one: %q", name, a)
		}
		if f(long1) != a {
			t.Errorf("%s: mapping is not deterministic", name)
		}
	}
	// Postgres truncates identifiers over 63 bytes silently: the offsets
	// table, the longest name, must fit.
	if n := len("watermill_offsets_" + pgTopic(long1)); n > 63 {
		t.Errorf("offsets table name is %d bytes", n)
	}
	if len(NATSStreamName(long1)) > 200 || len(AMQPExchange(long1)) > 200 {
		t.Error("a long name passes its limit")
	}
}
