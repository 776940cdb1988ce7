package cli

import (
	"fmt"
	"os"
	"runtime/pprof"
	"strings"

	"github.com/spf13/cobra"

	"github.com/nvent/nvent/internal/bench"
)

// benchCmd measures nvent end to end against real services on loopback (see
// package bench and BENCHMARKS.md).
func benchCmd(load loader, env Env) *cobra.Command {
	var cfg bench.Config
	var asJSON bool
	var cpuProfile string
	cmd := &cobra.Command{
		Use:   "bench SCENARIO",
		Short: "Measure throughput and commit→receive latency (" + strings.Join(bench.Scenarios, ", ") + ")",
		Long: "Measure nvent end to end on loopback. Scenarios:\n" +
			"  append-e2e       concurrent single-event appends through the Go store API, received on the stream\n" +
			"                   through a second `nvent serve` process; runs the baseline first and reports the ratio\n" +
			"  baseline         the same load by hand: a pgx INSERT, then a go-redis XADD, per event\n" +
			"  append-batch     appends of --batch events (default 100), events/s end to end\n" +
			"  latency-at-rate  --rate events/s (default 1000) for --duration (default 30s): commit→receive percentiles\n" +
			"  fanout           --clients SSE and WebSocket clients (default 2000) on one instance, each watching one of\n" +
			"                   --runs runs, while the runs get --rate events/s (default 200): delivery latency, server RSS\n" +
			"  http-append      append-e2e through POST /v1/streams/{subject}/events with keep-alive clients\n\n" +
			"Postgres is NVENT_POSTGRES_URL (default " + bench.DefaultPostgresURL + "), in a schema the\n" +
			"bench creates and drops; Redis is NVENT_REDIS_URL (default " + bench.DefaultRedisURL + "), under a key\n" +
			"prefix whose keys are deleted afterwards; NATS is NVENT_NATS_URL and RabbitMQ NVENT_AMQP_URL (their\n" +
			"streams, exchanges and queues are named after a fresh prefix). With a store and a stream that processes\n" +
			"can share (store postgres or redis, stream other than memory) a second process relays; otherwise (or\n" +
			"with --in-process) nvent runs inside the bench process.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := load()
			if err != nil {
				return err
			}
			cfg.Scenario = args[0]
			cfg.PostgresURL, cfg.RedisURL, cfg.NATSURL, cfg.AMQPURL = c.PostgresURL, c.RedisURL, c.NATSURL, c.AMQPURL
			cfg.Environ = env.Environ
			if !cmd.Flags().Changed("duration") {
				cfg.Duration = 0 // the scenario's default
			}
			if !cmd.Flags().Changed("rate") {
				cfg.Rate = 0
			}
			if f, ok := env.Stderr.(*os.File); ok && isTerminal(f) {
				cfg.Progress = f
			}
			cfg.Log = env.Stderr
			if cpuProfile != "" {
				f, err := os.Create(cpuProfile)
				if err != nil {
					return err
				}
				defer f.Close()
				if err := pprof.StartCPUProfile(f); err != nil {
					return err
				}
				defer pprof.StopCPUProfile()
			}
			rep, err := bench.Run(cmd.Context(), cfg)
			if err != nil {
				if len(rep.Results) == 0 {
					return err
				}
				fmt.Fprintln(env.Stderr, "nvent: bench:", err, "(partial results follow)")
			}
			out := cmd.OutOrStdout()
			if asJSON {
				if werr := bench.WriteJSON(out, rep); werr != nil {
					return werr
				}
			} else if werr := bench.WriteTable(out, rep); werr != nil {
				return werr
			}
			return err
		},
	}
	f := cmd.Flags()
	f.DurationVar(&cfg.Duration, "duration", bench.DefaultDuration, "how long the writers write (latency-at-rate: 30s unless given)")
	f.IntVar(&cfg.Concurrency, "concurrency", bench.DefaultConcurrency, "concurrent writers")
	f.IntVar(&cfg.Subjects, "subjects", bench.DefaultSubjects, "subjects the writers spread over")
	f.IntVar(&cfg.Rate, "rate", bench.DefaultRate, "events/s for latency-at-rate (fanout: 200 unless given)")
	f.IntVar(&cfg.Batch, "batch", bench.DefaultBatch, "events per append in append-batch")
	f.IntVar(&cfg.Clients, "clients", bench.DefaultClients, "fanout: live clients (half SSE, half WebSocket)")
	f.IntVar(&cfg.Runs, "runs", bench.DefaultRuns, "fanout: runs the clients watch")
	f.StringVar(&cfg.Store, "store", "postgres", strings.Join(bench.Stores, ", "))
	f.StringVar(&cfg.Stream, "stream", "redis", strings.Join(bench.Streams, ", "))
	f.BoolVar(&cfg.InProcess, "in-process", false, "run nvent inside the bench process even when a second process could relay (to profile it)")
	f.BoolVar(&asJSON, "json", false, "print one JSON object instead of the table")
	f.StringVar(&cpuProfile, "cpuprofile", "", "write the bench process's CPU profile to this file")
	return cmd
}

// isTerminal reports whether f is a terminal: a character device other than
// /dev/null (without a terminal library).
func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	if err != nil || st.Mode()&os.ModeCharDevice == 0 {
		return false
	}
	null, err := os.Stat(os.DevNull)
	return err != nil || !os.SameFile(st, null)
}
