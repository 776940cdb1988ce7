package e2e

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestCorrelationIDTravelsToTheStream: the id a request brings (or is
// given) comes back on the response and reaches the stream message of the
// change it made, through the store and the relay, as another instance's
// tail sees it.
func TestCorrelationIDTravelsToTheStream(t *testing.T) {
	env, _, _ := clusterEnv(t)
	dir := t.TempDir()
	tail := Tail(t, bin, dir, "store-sync:*", env...)
	p := Serve(t, bin, dir, env...)
	do := func(method, path, body, id string) string {
		t.Helper()
		req, _ := http.NewRequest(method, p.URL+path, strings.NewReader(body))
		if id != "" {
			req.Header.Set("X-Correlation-ID", id)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode >= 300 {
			t.Fatalf("%s %s: %d", method, path, resp.StatusCode)
		}
		return resp.Header.Get("X-Correlation-ID")
	}
	if got := do("POST", "/v1/streams/orders:1/events", `{"type":"placed"}`, "checkout-42"); got != "checkout-42" {
		t.Fatalf("response correlation id %q", got)
	}
	made := do("PUT", "/v1/docs/carts/c1", `{"items":1}`, "")
	if made == "" {
		t.Fatal("a request without a correlation id was not given one")
	}
	want := map[string]string{"store-sync:append:orders:1": "checkout-42", "store-sync:save:carts:c1": made}
	for len(want) > 0 {
		select {
		case m := <-tail:
			topic, _ := m["topic"].(string)
			if id, ok := want[topic]; ok {
				if m["correlationId"] != id {
					t.Fatalf("%s carried correlation id %v, want %s", topic, m["correlationId"], id)
				}
				delete(want, topic)
			}
		case <-time.After(15 * time.Second):
			t.Fatalf("no stream message for %v", want)
		}
	}
}
