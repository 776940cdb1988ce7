// Package metrics holds nvent's Prometheus metrics, registered on a
// registry of the process's own (no global registry), served at /metrics.
package metrics

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are the collectors nvent updates.
type Metrics struct {
	Registry *prometheus.Registry
	// WiringMessages counts messages a wiring handled, by wiring.
	WiringMessages *prometheus.CounterVec
	// StoreSync counts what this instance received on the store-sync
	// channel, by outcome: received, append, gap, duplicate, invalidation.
	StoreSync *prometheus.CounterVec
}

// New registers nvent's metrics and the Go runtime's on a new registry.
func New() *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{
		Registry: reg,
		WiringMessages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "nvent", Name: "wiring_messages_total",
			Help: "Messages handled by a wiring, by wiring.",
		}, []string{"wiring"}),
		StoreSync: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "nvent", Name: "store_sync_messages_total",
			Help: "Store-sync messages this instance received, by outcome (received, append, gap, duplicate, invalidation).",
		}, []string{"outcome"}),
	}
	reg.MustRegister(m.WiringMessages, m.StoreSync, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry})
}
