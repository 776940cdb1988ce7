package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// WriteJSON writes the report as one JSON object on one line.
func WriteJSON(w io.Writer, rep Report) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc.Encode(rep)
}

// WriteTable writes the report for people: a header with the configuration
// and the machine, then one row per result.
func WriteTable(w io.Writer, rep Report) error {
	c := rep.Config
	fmt.Fprintf(w, "nvent bench %s: %gs, concurrency %d, %d subjects", rep.Scenario, c.DurationSec, c.Concurrency, c.Subjects)
	if c.Batch > 0 {
		fmt.Fprintf(w, ", batch %d", c.Batch)
	}
	if c.Rate > 0 {
		fmt.Fprintf(w, ", rate %d/s", c.Rate)
	}
	if c.Clients > 0 {
		fmt.Fprintf(w, ", %d clients on %d runs", c.Clients, c.Runs)
	}
	fmt.Fprintf(w, "; store %s, stream %s, %s\n", c.Store, c.Stream, c.Topology)
	m := rep.Machine
	fmt.Fprintf(w, "machine: %d CPUs, %s, load average %s → %s", m.CPUs, m.GoVersion, orDash(m.LoadAvgBefore), orDash(m.LoadAvgAfter))
	if m.CPU != "" {
		fmt.Fprintf(w, "; CPUs during the run: %s", m.CPU)
	}
	fmt.Fprintln(w)
	if m.Postgres != "" {
		fmt.Fprintf(w, "postgres %s\n", m.Postgres)
	}
	if m.Redis != "" {
		fmt.Fprintf(w, "redis %s\n", m.Redis)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "result\tevents\tcommitted/s\treceived/s\tp50 ms\tp90 ms\tp99 ms\tmax ms\twrite p50/p99 ms\tmissing\tdup\terrors\tbaseline/s\tratio\t")
	for _, r := range rep.Results {
		base, ratio := "-", "-"
		if r.BaselineEventsPerSec != nil {
			base = fmt.Sprintf("%.0f", *r.BaselineEventsPerSec)
		}
		if r.Ratio != nil {
			ratio = fmt.Sprintf("%.2f", *r.Ratio)
		}
		fmt.Fprintf(tw, "%s\t%d\t%.0f\t%.0f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f/%.2f\t%d\t%d\t%d\t%s\t%s\t\n",
			r.Name, r.Events, r.CommittedPerSec, r.EventsPerSec, r.P50Ms, r.P90Ms, r.P99Ms, r.MaxMs,
			r.WriteP50Ms, r.WriteP99Ms, r.Missing, r.Duplicates, r.Errors, base, ratio)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	var notes []string
	for _, r := range rep.Results {
		if r.Clients > 0 {
			notes = append(notes, fmt.Sprintf("%s: %d clients, %d deliveries", r.Name, r.Clients, r.Received))
		}
		if r.PeakRSSMB > 0 {
			notes = append(notes, fmt.Sprintf("%s: nvent serve used %.1f s of CPU (the bench %.1f s); peak RSS %.1f MB, peak goroutines %d, RSS every 10s %v MB",
				r.Name, r.ServerCPUSec, r.BenchCPUSec, r.PeakRSSMB, r.PeakGoroutines, r.RSSMB))
		}
		if r.TargetRate > 0 {
			notes = append(notes, fmt.Sprintf("%s: asked for %d events/s, committed %.0f/s", r.Name, r.TargetRate, r.CommittedPerSec))
		}
		if r.Early > 0 {
			notes = append(notes, fmt.Sprintf("%s: %d receipts came before the writer had its answer (counted as 0 ms)", r.Name, r.Early))
		}
		if r.Note != "" {
			notes = append(notes, r.Name+": "+r.Note)
		}
	}
	if len(notes) > 0 {
		fmt.Fprintln(w)
		fmt.Fprintln(w, strings.Join(notes, "\n"))
	}
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
