// Package bench measures nvent end to end: `nvent bench SCENARIO`.
//
// Every scenario writes events and measures when each one arrives on the
// stream: the commit (the moment the writer's Append, INSERT or POST
// returned) is matched with the receipt (the moment a stream consumer got
// it) by event id, and every latency figure is an exact percentile over all
// the recorded samples (nearest rank; see Percentile), not a histogram.
//
// The system under test is built from the same packages as `nvent serve`:
//
//   - two-process (the default for --store postgres --stream redis): the
//     bench appends through the Go store API (postgres.Store.Append) on a
//     schema of its own, a second process — `nvent serve` started from the
//     same binary on a free loopback port, with that schema and a stream key
//     prefix of its own — relays the commits onto Redis, and the bench
//     subscribes to store-sync:append:* on Redis, as any other instance
//     would;
//   - in-process (every other combination, or --in-process): a memory
//     stream or a memory store lives in one process, so the bench runs the
//     store, its relay (Postgres, SQLite) or feed (memory), the bus, the
//     router with the stream coordinator, and the stream itself.
//
// The baseline does the same work by hand: a pgx single-row INSERT per event
// (autocommit, so with the server's synchronous_commit like the store's
// appends), then a go-redis XADD of the same stream message, read back with
// XREAD by a consumer in the same process.
//
// Everything runs on loopback and is bounded: the duration, the
// concurrency, the number of events and clients have upper limits, and the
// wait for stragglers after the load ends is bounded too. The Postgres
// schema and the Redis keys a run creates are dropped when it ends.
package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nvent/nvent/internal/domain"
)

// The scenarios, in the order of the issue.
const (
	ScenarioAppendE2E     = "append-e2e"
	ScenarioBaseline      = "baseline"
	ScenarioAppendBatch   = "append-batch"
	ScenarioLatencyAtRate = "latency-at-rate"
	ScenarioFanout        = "fanout"
	ScenarioHTTPAppend    = "http-append"
)

// Scenarios lists the scenarios Run knows.
var Scenarios = []string{ScenarioAppendE2E, ScenarioBaseline, ScenarioAppendBatch, ScenarioLatencyAtRate, ScenarioFanout, ScenarioHTTPAppend}

// Defaults and limits.
const (
	DefaultDuration       = 10 * time.Second
	DefaultRateDuration   = 30 * time.Second // latency-at-rate
	DefaultConcurrency    = 8
	DefaultSubjects       = 64
	DefaultRate           = 1000
	DefaultFanoutRate     = 200
	DefaultBatch          = 100
	DefaultClients        = 2000
	DefaultRuns           = 100
	DefaultPostgresURL    = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	DefaultRedisURL       = "redis://127.0.0.1:6379/0"
	DefaultNATSURL        = "nats://127.0.0.1:4222"
	DefaultAMQPURL        = "amqp://guest:guest@127.0.0.1:5672/"
	MaxDuration           = 10 * time.Minute
	MaxConcurrency        = 512
	MaxSubjects           = 100_000
	MaxRate               = 200_000
	MaxBatch              = 1000
	MaxClients            = 10_000
	MaxEvents             = 20_000_000 // per phase: the load stops there whatever the duration
	drainIdle             = 10 * time.Second
	drainMax              = 60 * time.Second
	probeTimeout          = 30 * time.Second
	serveStartTimeout     = 60 * time.Second
	serveStopTimeout      = 20 * time.Second
	defaultStreamMaxLen   = 100_000 // the store-sync stream's MAXLEN, which the baseline's XADD uses too
	defaultEventType      = "bench.tick"
	defaultSubjectPrefix  = "bench:"
	defaultPayloadPadding = "nvent bench payload, about the size of a small domain event"
)

// Config is one run of the bench.
type Config struct {
	Scenario    string
	Duration    time.Duration // 0: the scenario's default
	Concurrency int           // writers (appenders, HTTP clients)
	Subjects    int           // subjects the writers spread over
	Rate        int           // events/s for latency-at-rate and fanout; 0: the scenario's default
	Batch       int           // events per Append in append-batch
	Clients     int           // fanout: live clients
	Runs        int           // fanout: runs the clients watch
	Store       string        // postgres (default), redis, sqlite, memory
	Stream      string        // redis (default), nats, amqp, postgres, memory
	InProcess   bool          // run nvent inside the bench process even when it could run in a second one

	PostgresURL string // default DefaultPostgresURL
	RedisURL    string // default DefaultRedisURL
	NATSURL     string // default DefaultNATSURL (--stream nats)
	AMQPURL     string // default DefaultAMQPURL (--stream amqp)
	// Executable is the nvent binary started as the second process.
	// Default: os.Executable().
	Executable string
	// Environ is the environment the second process starts from (its
	// NVENT_* variables are replaced). Default: os.Environ().
	Environ []string
	// Progress, when set, receives a progress line (with carriage
	// returns: for a terminal).
	Progress io.Writer
	// Log receives warnings of the in-process components and the second
	// process's log when it fails. Default: discarded.
	Log io.Writer
}

func (c *Config) setDefaults() {
	if c.Duration == 0 {
		c.Duration = DefaultDuration
		if c.Scenario == ScenarioLatencyAtRate {
			c.Duration = DefaultRateDuration
		}
	}
	if c.Concurrency == 0 {
		c.Concurrency = DefaultConcurrency
	}
	if c.Subjects == 0 {
		c.Subjects = DefaultSubjects
	}
	if c.Rate == 0 {
		c.Rate = DefaultRate
		if c.Scenario == ScenarioFanout {
			c.Rate = DefaultFanoutRate
		}
	}
	if c.Batch == 0 {
		c.Batch = DefaultBatch
	}
	if c.Clients == 0 {
		c.Clients = DefaultClients
	}
	if c.Runs == 0 {
		c.Runs = DefaultRuns
	}
	if c.Store == "" {
		c.Store = "postgres"
	}
	if c.Stream == "" {
		c.Stream = "redis"
	}
	if c.PostgresURL == "" {
		c.PostgresURL = DefaultPostgresURL
	}
	if c.RedisURL == "" {
		c.RedisURL = DefaultRedisURL
	}
	if c.NATSURL == "" {
		c.NATSURL = DefaultNATSURL
	}
	if c.AMQPURL == "" {
		c.AMQPURL = DefaultAMQPURL
	}
	if c.Environ == nil {
		c.Environ = os.Environ()
	}
	if c.Log == nil {
		c.Log = io.Discard
	}
}

// Validate reports a configuration the bench refuses, as invalid input.
func (c Config) Validate() error {
	bad := func(format string, args ...any) error { return domain.Errorf(domain.CodeInvalidInput, format, args...) }
	known := false
	for _, s := range Scenarios {
		known = known || s == c.Scenario
	}
	switch {
	case !known:
		return bad("unknown scenario %q (want one of %s)", c.Scenario, strings.Join(Scenarios, ", "))
	case c.Duration <= 0 || c.Duration > MaxDuration:
		return bad("--duration must be above 0 and at most %v, not %v", MaxDuration, c.Duration)
	case c.Concurrency < 1 || c.Concurrency > MaxConcurrency:
		return bad("--concurrency must be 1…%d, not %d", MaxConcurrency, c.Concurrency)
	case c.Subjects < 1 || c.Subjects > MaxSubjects:
		return bad("--subjects must be 1…%d, not %d", MaxSubjects, c.Subjects)
	case c.Rate < 1 || c.Rate > MaxRate:
		return bad("--rate must be 1…%d events/s, not %d", MaxRate, c.Rate)
	case c.Batch < 1 || c.Batch > MaxBatch:
		return bad("--batch must be 1…%d, not %d", MaxBatch, c.Batch)
	case c.Clients < 1 || c.Clients > MaxClients:
		return bad("--clients must be 1…%d, not %d", MaxClients, c.Clients)
	case c.Runs < 1 || c.Runs > c.Clients:
		return bad("--runs must be 1…clients (%d), not %d", c.Clients, c.Runs)
	case !slices.Contains(Stores, c.Store):
		return bad("--store must be one of %s, not %q", strings.Join(Stores, ", "), c.Store)
	case !slices.Contains(Streams, c.Stream):
		return bad("--stream must be one of %s, not %q", strings.Join(Streams, ", "), c.Stream)
	case c.Scenario == ScenarioBaseline && (c.Store != "postgres" || c.Stream != "redis"):
		return bad("the baseline is Postgres INSERT + Redis XADD: it needs --store postgres --stream redis")
	case (c.Scenario == ScenarioFanout || c.Scenario == ScenarioHTTPAppend) && !c.twoProcess():
		return bad("%s talks HTTP to a second nvent process: it needs --store postgres or redis, a stream other than memory, and no --in-process", c.Scenario)
	}
	return nil
}

// Stores and Streams are the --store and --stream values the bench takes.
var (
	Stores  = []string{"postgres", "redis", "sqlite", "memory"}
	Streams = []string{"redis", "nats", "amqp", "postgres", "memory"}
)

// twoProcess reports whether a second nvent process relays (see the package
// doc): whenever both the store and the stream can be shared between
// processes.
func (c Config) twoProcess() bool {
	return (c.Store == "postgres" || c.Store == "redis") && c.Stream != "memory" && !c.InProcess
}

// Topology names where nvent runs.
func (c Config) Topology() string {
	if c.twoProcess() {
		return "two-process"
	}
	return "in-process"
}

// Report is the outcome of a run: one JSON object with --json.
type Report struct {
	Scenario string        `json:"scenario"`
	Config   ReportConfig  `json:"config"`
	Machine  Machine       `json:"machine"`
	Results  []Result      `json:"results"`
	Elapsed  time.Duration `json:"-"`
}

// ReportConfig is the configuration a report was measured with.
type ReportConfig struct {
	DurationSec float64 `json:"duration_sec"`
	Concurrency int     `json:"concurrency"`
	Subjects    int     `json:"subjects"`
	Rate        int     `json:"rate,omitempty"`
	Batch       int     `json:"batch,omitempty"`
	Clients     int     `json:"clients,omitempty"`
	Runs        int     `json:"runs,omitempty"`
	Store       string  `json:"store"`
	Stream      string  `json:"stream"`
	Topology    string  `json:"topology"`
}

// Machine describes where the run happened.
type Machine struct {
	CPUs          int    `json:"cpus"`
	GoVersion     string `json:"go_version"`
	LoadAvgBefore string `json:"loadavg_before,omitempty"`
	LoadAvgAfter  string `json:"loadavg_after,omitempty"`
	// CPU is how the machine's CPUs spent the run (from /proc/stat): busy
	// (user + system + irq), waiting for I/O, and stolen by the hypervisor.
	CPU      string `json:"cpu,omitempty"`
	Postgres string `json:"postgres,omitempty"`
	Redis    string `json:"redis,omitempty"`
}

// Result is one measured phase of a scenario.
type Result struct {
	Name string `json:"name"`
	// DurationSec is how long the writers wrote.
	DurationSec float64 `json:"duration_sec"`
	// Events is how many events were committed (receipts are expected
	// for each, once per client in fanout).
	Events     int64 `json:"events"`
	Received   int64 `json:"received"`
	Missing    int64 `json:"missing"`
	Duplicates int64 `json:"duplicates"`
	Errors     int64 `json:"errors"`
	// EventsPerSec is the end-to-end figure: events received on the stream
	// per second, from the start of the load to the last receipt.
	EventsPerSec float64 `json:"events_per_sec"`
	// CommittedPerSec is events committed per second of load.
	CommittedPerSec float64 `json:"committed_per_sec"`
	// Commit → receipt latency, in milliseconds, over Samples receipts.
	P50Ms   float64 `json:"p50_ms"`
	P90Ms   float64 `json:"p90_ms"`
	P99Ms   float64 `json:"p99_ms"`
	MaxMs   float64 `json:"max_ms"`
	Samples int     `json:"samples"`
	// Early counts receipts that came before the writer had its answer
	// (their latency counts as 0).
	Early int64 `json:"early"`
	// The writer's call (Append, INSERT + XADD, POST), in milliseconds.
	WriteP50Ms float64 `json:"write_p50_ms"`
	WriteP99Ms float64 `json:"write_p99_ms"`
	// append-e2e only: the baseline's events/s and EventsPerSec / it.
	BaselineEventsPerSec *float64 `json:"baseline_events_per_sec,omitempty"`
	Ratio                *float64 `json:"ratio,omitempty"`
	// latency-at-rate and fanout: the rate asked for.
	TargetRate int `json:"target_rate,omitempty"`
	// fanout: the clients.
	Clients int `json:"clients,omitempty"`
	// Two-process scenarios: the second process's resident memory (peak,
	// and sampled every 10 s of the load, from its start) and goroutines.
	PeakRSSMB      float64   `json:"peak_rss_mb,omitempty"`
	RSSMB          []float64 `json:"rss_mb,omitempty"`
	PeakGoroutines int       `json:"peak_goroutines,omitempty"`
	// Two-process scenarios: CPU time (user + system) used from the start
	// of the load to the last receipt by the second process and by the bench
	// process (the writers and the consumer), in seconds.
	ServerCPUSec float64 `json:"server_cpu_sec,omitempty"`
	BenchCPUSec  float64 `json:"bench_cpu_sec,omitempty"`
	Note         string  `json:"note,omitempty"`
}

// Run runs cfg's scenario and returns its report. The error is a
// *domain.Error with CodeInvalidInput for a configuration it refuses.
func Run(ctx context.Context, cfg Config) (Report, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return Report{}, err
	}
	began := time.Now()
	rep := Report{
		Scenario: cfg.Scenario,
		Config: ReportConfig{
			DurationSec: cfg.Duration.Seconds(), Concurrency: cfg.Concurrency, Subjects: cfg.Subjects,
			Store: cfg.Store, Stream: cfg.Stream, Topology: cfg.Topology(),
		},
		Machine: Machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), LoadAvgBefore: loadAvg()},
	}
	switch cfg.Scenario {
	case ScenarioLatencyAtRate:
		rep.Config.Rate = cfg.Rate
	case ScenarioAppendBatch:
		rep.Config.Batch = cfg.Batch
	case ScenarioFanout:
		rep.Config.Rate, rep.Config.Clients, rep.Config.Runs = cfg.Rate, cfg.Clients, cfg.Runs
	}
	r := &runner{cfg: cfg}
	defer r.cleanup()
	stat0, _ := cpuStat()
	results, err := r.run(ctx, &rep.Machine)
	rep.Results = results
	rep.Machine.LoadAvgAfter = loadAvg()
	if stat1, err := cpuStat(); err == nil && stat0 != nil {
		rep.Machine.CPU = cpuShares(stat0, stat1)
	}
	rep.Elapsed = time.Since(began)
	return rep, err
}

// loadAvg returns the first three fields of /proc/loadavg, or "".
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// cpuStat returns the counters of the "cpu" line of /proc/stat: user, nice,
// system, idle, iowait, irq, softirq, steal.
func cpuStat() ([]int64, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return nil, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return nil, fmt.Errorf("unreadable /proc/stat")
	}
	out := make([]int64, 8)
	for i := range out {
		if out[i], err = strconv.ParseInt(f[i+1], 10, 64); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// cpuShares describes how the CPUs spent the time between two cpuStats.
func cpuShares(a, b []int64) string {
	d := make([]float64, len(a))
	var total float64
	for i := range a {
		d[i] = float64(b[i] - a[i])
		total += d[i]
	}
	if total <= 0 {
		return ""
	}
	pct := func(v float64) float64 { return 100 * v / total }
	return fmt.Sprintf("busy %.0f%%, iowait %.0f%%, steal %.0f%%, idle %.0f%%",
		pct(d[0]+d[1]+d[2]+d[5]+d[6]), pct(d[4]), pct(d[7]), pct(d[3]))
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func errorf(format string, args ...any) error { return fmt.Errorf("bench: "+format, args...) }
