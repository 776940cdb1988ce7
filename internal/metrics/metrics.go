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
	// RelayRows counts rows the relay published and checkpointed, by table.
	RelayRows *prometheus.CounterVec
	// RelayLeader is 1 while this instance holds the relay lease.
	RelayLeader prometheus.Gauge
	// RelayCheckpoint is the position relayed up to, by table.
	RelayCheckpoint *prometheus.GaugeVec
	// LiveConnections is the number of open SSE and WebSocket connections,
	// by kind (sse, ws).
	LiveConnections *prometheus.GaugeVec
	// SlowClients counts live connections cut for not keeping up, by kind.
	SlowClients *prometheus.CounterVec
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
		RelayRows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "nvent", Name: "relay_rows_total",
			Help: "Committed rows the relay published and checkpointed, by table (events, changes).",
		}, []string{"table"}),
		RelayLeader: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "nvent", Name: "relay_leader",
			Help: "1 while this instance holds the relay lease and relays, 0 otherwise.",
		}),
		RelayCheckpoint: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "nvent", Name: "relay_checkpoint_position",
			Help: "The position the relay has checkpointed, by table.",
		}, []string{"table"}),
		LiveConnections: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "nvent", Name: "live_connections",
			Help: "Open SSE and WebSocket connections, by kind.",
		}, []string{"kind"}),
		SlowClients: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "nvent", Name: "live_slow_clients_total",
			Help: "Live connections cut because they did not keep up, by kind.",
		}, []string{"kind"}),
	}
	reg.MustRegister(m.WiringMessages, m.StoreSync, m.RelayRows, m.RelayLeader, m.RelayCheckpoint, m.LiveConnections, m.SlowClients, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry})
}
