package main

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// print writes the report for a person, in Markdown (the README pastes
// it): the machine and the settings, a table of the servers, a table of
// the statements, a line of notes per workload, a line per comparison of
// two workloads, and the statements pgbench ran.
func (r *report) print(out io.Writer) {
	r.printSetup(out)
	fmt.Fprintln(out)
	markdownTable(out, r.serverRows())
	fmt.Fprintln(out)
	markdownTable(out, r.statementRows())
	fmt.Fprintln(out)
	for _, w := range r.Workloads {
		fmt.Fprintf(out, "%s: %s\n", w.Name, strings.Join(notes(w), "; "))
	}
	for _, c := range comparisons {
		if v := r.serviceRatios(c.workload, c.over); len(v) > 0 {
			fmt.Fprintln(out, comparisonLine(c, v))
		}
	}
	fmt.Fprintln(out, "\nStatements pgbench ran, the cheapest and the service's own:")
	for _, w := range r.Workloads {
		if sameStatement(w.Cheapest.SQL, w.Statement.SQL) {
			fmt.Fprintf(out, "%s: %s (the service's own)\n", w.Name, oneLine(w.Cheapest.SQL))
			continue
		}
		fmt.Fprintf(out, "%s:\n  cheapest: %s\n  service:  %s\n", w.Name, oneLine(w.Cheapest.SQL), oneLine(w.Statement.SQL))
	}
}

func (r *report) printSetup(out io.Writer) {
	m := r.Machine
	fmt.Fprintf(out, "\n%d cores (%s), PostgreSQL %s (%s), %s\n", m.Cores, m.CPU, m.PostgreSQL, m.Server, m.Go)
	var settings []string
	for _, k := range slices.Sorted(maps.Keys(m.Settings)) {
		settings = append(settings, k+"="+m.Settings[k])
	}
	fmt.Fprintf(out, "server: %s\n", strings.Join(settings, " "))
	fmt.Fprintf(out, "N=%d users, concurrency %d; per workload %d rounds of service, reference and floor, %s each (after %s of warm-up), then pgbench %s per statement; seed %.0fs, total %.0fs\n",
		m.Users, m.Concurrency, m.Rounds, m.Duration, m.Warmup, m.Duration, r.SeedSeconds, r.TotalSeconds)
	if m.ServiceDB != "" {
		fmt.Fprintf(out, "service DATABASE_URL settings: %s\n", m.ServiceDB)
	}
}

// serverRows are the servers' figures, a row per workload.
func (r *report) serverRows() [][]string {
	rows := [][]string{{"workload", "service RPS", "reference RPS", "service/reference (min–max)",
		"service p99", "reference p99", "service CPU/call", "reference CPU/call",
		"PG CPU/call via service", "PG CPU/call via reference", "floor RPS", "floor CPU/call"}}
	for _, w := range r.Workloads {
		svc, ref, floor := summarize(w.Service), summarize(w.Reference), summarize(w.Floor)
		rows = append(rows, []string{w.Name, rate(svc.RPS), rate(ref.RPS),
			fmt.Sprintf("%.2f (%.2f–%.2f)", w.Ratio.Median, w.Ratio.Min, w.Ratio.Max),
			latency(time.Duration(svc.P99)), latency(time.Duration(ref.P99)),
			micros(svc.ServerCPU), micros(ref.ServerCPU), micros(svc.PostgresCPU), micros(ref.PostgresCPU),
			rate(floor.RPS), micros(floor.ServerCPU)})
	}
	return rows
}

// statementRows are pgbench's figures, a row per workload, beside the
// service's rate.
func (r *report) statementRows() [][]string {
	rows := [][]string{{"workload", "cheapest TPS", "PG CPU/tx", "service's statement TPS", "PG CPU/tx",
		"statement/cheapest", "service RPS/cheapest TPS"}}
	for _, w := range r.Workloads {
		svc := summarize(w.Service)
		rows = append(rows, []string{w.Name, rate(w.Cheapest.Pgbench.TPS), micros(w.Cheapest.PostgresCPU),
			rate(w.Statement.Pgbench.TPS), micros(w.Statement.PostgresCPU),
			fmt.Sprintf("%.2f", divide(w.Statement.Pgbench.TPS, w.Cheapest.Pgbench.TPS)),
			fmt.Sprintf("%.2f", divide(svc.RPS, w.Cheapest.Pgbench.TPS))})
	}
	return rows
}

// notes are what a workload's tables leave out: a missed target, the
// machine's and the load generator's CPU, memory, the service's pool, and
// anything that makes a run's figures less than whole.
func notes(w workloadResult) []string {
	svc, ref, floor := summarize(w.Service), summarize(w.Reference), summarize(w.Floor)
	var notes []string
	if ratio := divide(svc.RPS, w.Cheapest.Pgbench.TPS); ratio < w.Target {
		notes = append(notes, fmt.Sprintf("service/cheapest %.2f below the target %.2f", ratio, w.Target))
	}
	notes = append(notes, fmt.Sprintf("machine CPU per call: service %s, reference %s, floor %s, pgbench %s (cheapest) and %s (service's statement)",
		micros(svc.MachineCPU), micros(ref.MachineCPU), micros(floor.MachineCPU), micros(w.Cheapest.MachineCPU), micros(w.Statement.MachineCPU)))
	notes = append(notes, fmt.Sprintf("load generator CPU per call: %s, %s, %s", micros(svc.LoadgenCPU), micros(ref.LoadgenCPU), micros(floor.LoadgenCPU)))
	notes = append(notes, fmt.Sprintf("peak RSS: service %d MiB, reference %d MiB", svc.PeakRSS>>20, ref.PeakRSS>>20))
	if pool := meanPool(w.Service); pool != nil {
		notes = append(notes, fmt.Sprintf("service pool of %.0f: %.0f%% of acquires waited, mean acquire %s (wall time)",
			pool.MaxConns, 100*pool.WaitedShare, micros(pool.MeanWait)))
	}
	for _, runs := range [][]serverRun{w.Service, w.Reference, w.Floor} {
		for _, run := range runs {
			if run.CountBound {
				notes = append(notes, "a run stopped at the call-count bound")
			}
			if run.RSSNote != "" {
				notes = append(notes, "RSS "+run.RSSNote)
			}
		}
	}
	for _, s := range []struct {
		name string
		runs []serverRun
	}{{serviceName, w.Service}, {referenceName, w.Reference}, {floorName, w.Floor}} {
		var n int64
		for _, run := range s.runs {
			n += run.Unfinished
		}
		if n > 0 {
			notes = append(notes, fmt.Sprintf("%s: %d calls still running %s after the end of a run were cancelled, left out of its rate and p99", s.name, n, callGrace))
		}
	}
	return slices.Compact(notes)
}

// comparisonLine is a comparison's ratios: the median round's and the
// extremes, as the servers' table gives service/reference, then each
// round's, and the target if it is missed.
func comparisonLine(c comparison, v []float64) string {
	s := spreadOf(v)
	rounds := make([]string, len(v))
	for i, x := range v {
		rounds[i] = fmt.Sprintf("%.2f", x)
	}
	line := fmt.Sprintf("service RPS, %s/%s: %.2f (%.2f–%.2f); by round %s", c.workload, c.over, s.Median, s.Min, s.Max, strings.Join(rounds, ", "))
	if s.Median < c.target {
		line += fmt.Sprintf("; below the target %.2f", c.target)
	}
	return line
}

// markdownTable prints rows as a Markdown table, the first row as the
// header, the first column left-aligned and the others right-aligned.
func markdownTable(out io.Writer, rows [][]string) {
	widths := make([]int, len(rows[0]))
	for _, row := range rows {
		for i, cell := range row {
			widths[i] = max(widths[i], utf8.RuneCountInString(cell))
		}
	}
	line := func(row []string) {
		var b strings.Builder
		for i, cell := range row {
			pad := strings.Repeat(" ", widths[i]-utf8.RuneCountInString(cell))
			if i == 0 {
				fmt.Fprintf(&b, "| %s%s ", cell, pad)
			} else {
				fmt.Fprintf(&b, "| %s%s ", pad, cell)
			}
		}
		fmt.Fprintln(out, b.String()+"|")
	}
	line(rows[0])
	sep := make([]string, len(widths))
	for i, w := range widths {
		if i == 0 {
			sep[i] = strings.Repeat("-", w)
		} else {
			sep[i] = strings.Repeat("-", w-1) + ":"
		}
	}
	line(sep)
	for _, row := range rows[1:] {
		line(row)
	}
}

func latency(d time.Duration) string {
	if d < time.Millisecond {
		return fmt.Sprintf("%dµs", d.Microseconds())
	}
	return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
}

func micros(d time.Duration) string {
	return fmt.Sprintf("%.1fµs", float64(d)/float64(time.Microsecond))
}

func rate(v float64) string { return fmt.Sprintf("%.0f", v) }
