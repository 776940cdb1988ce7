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
	// Appends, AppendErrors and AppendDuration describe the store's appends
	// by adapter (see InstrumentStore).
	Appends        *prometheus.CounterVec
	AppendErrors   *prometheus.CounterVec
	AppendDuration *prometheus.HistogramVec
	// StreamPublishes counts stream publishes by channel and result (ok,
	// failed).
	StreamPublishes *prometheus.CounterVec
	// Poisoned counts messages set aside on the poison topic.
	Poisoned prometheus.Counter
	// RelayLagEvents and RelayLagSeconds say how far the relay is behind
	// the newest commit: in positions, and in the age of the oldest row not
	// yet relayed.
	RelayLagEvents  *prometheus.GaugeVec
	RelayLagSeconds *prometheus.GaugeVec
}

// CacheStats is what the cache metrics read.
type CacheStats func() (hits, misses, invalidations uint64)

// RegisterCache exposes the read cache's counters.
func (m *Metrics) RegisterCache(stats CacheStats) {
	counter := func(name, help string, pick func(h, mi, i uint64) uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "nvent", Name: name, Help: help}, func() float64 {
			return float64(pick(stats()))
		})
	}
	m.Registry.MustRegister(
		counter("cache_hits_total", "Document and key reads served by the cache.", func(h, _, _ uint64) uint64 { return h }),
		counter("cache_misses_total", "Document and key reads that went to the store.", func(_, mi, _ uint64) uint64 { return mi }),
		counter("cache_invalidations_total", "Cache entries dropped for a change.", func(_, _, i uint64) uint64 { return i }),
	)
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
		Appends: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "nvent", Name: "appends_total",
			Help: "Events written by appends (duplicates not counted), by adapter.",
		}, []string{"adapter"}),
		AppendErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "nvent", Name: "append_errors_total",
			Help: "Append calls that failed, by adapter and error code.",
		}, []string{"adapter", "code"}),
		AppendDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "nvent", Name: "append_duration_seconds",
			Help:    "Append call latency, by adapter.",
			Buckets: []float64{.0005, .001, .002, .005, .01, .02, .05, .1, .25, .5, 1, 2.5},
		}, []string{"adapter"}),
		StreamPublishes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "nvent", Name: "stream_publishes_total",
			Help: "Messages published on the stream by the coordinator, by channel and result (ok, failed).",
		}, []string{"channel", "result"}),
		Poisoned: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "nvent", Name: "poison_messages_total",
			Help: "Messages a wiring could not handle, set aside on the poison topic.",
		}),
		RelayLagEvents: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "nvent", Name: "relay_lag_events",
			Help: "Positions between the newest committed row and the relay's checkpoint, by table (leader only).",
		}, []string{"table"}),
		RelayLagSeconds: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "nvent", Name: "relay_lag_seconds",
			Help: "Age of the oldest committed row not yet relayed, by table (0 when caught up; leader only).",
		}, []string{"table"}),
	}
	reg.MustRegister(m.WiringMessages, m.StoreSync, m.RelayRows, m.RelayLeader, m.RelayCheckpoint, m.LiveConnections, m.SlowClients,
		m.Appends, m.AppendErrors, m.AppendDuration, m.StreamPublishes, m.Poisoned, m.RelayLagEvents, m.RelayLagSeconds, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry})
}
