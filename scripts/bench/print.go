package main

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
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
	for _, w := range r.Workloads {
		if len(w.EventsOn) > 0 {
			fmt.Fprintln(out, eventsLine(w))
			fmt.Fprintln(out, backlogLine(w.Name, w.EventsOn))
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
	var writes []string
	for _, w := range r.Workloads {
		if len(w.EventsOn) > 0 {
			writes = append(writes, w.Name)
		}
	}
	if len(writes) > 0 {
		fmt.Fprintf(out, "events: %s also on a second service relaying its events to NATS JetStream (in the bench's process), on a copy of the database, right after the service (events off) in each round\n",
			strings.Join(writes, " and "))
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
	for _, runs := range [][]serverRun{w.Service, w.EventsOn, w.Reference, w.Floor} {
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
	}{{serviceName, w.Service}, {eventsName, w.EventsOn}, {referenceName, w.Reference}, {floorName, w.Floor}} {
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

// comparisonLine is a comparison's ratios (ratioLine).
func comparisonLine(c comparison, v []float64) string {
	return ratioLine(fmt.Sprintf("service RPS, %s/%s", c.workload, c.over), v, c.target)
}

// ratioLine is label and ratios measured round by round: the median
// round's and the extremes, as the servers' table gives
// service/reference, then each round's, and the target if it is missed.
func ratioLine(label string, v []float64, target float64) string {
	s := spreadOf(v)
	rounds := make([]string, len(v))
	for i, x := range v {
		rounds[i] = fmt.Sprintf("%.2f", x)
	}
	line := fmt.Sprintf("%s: %.2f (%.2f–%.2f); by round %s", label, s.Median, s.Min, s.Max, strings.Join(rounds, ", "))
	if s.Median < target {
		line += fmt.Sprintf("; below the target %.2f", target)
	}
	return line
}

// eventsLine is a workload's rate with events on over its rate with
// events off, round by round, and the events-on service's figures that
// the servers' table gives for the service.
func eventsLine(w workloadResult) string {
	on, off := summarize(w.EventsOn), summarize(w.Service)
	return ratioLine(fmt.Sprintf("service RPS, %s, events on/events off", w.Name), ratios(w.EventsOn, w.Service), eventsTarget) +
		fmt.Sprintf("; events on: %s RPS, p99 %s, CPU/call: service %s, PostgreSQL %s, NATS %s, machine %s (events off: %s)",
			rate(on.RPS), latency(time.Duration(on.P99)), micros(on.ServerCPU), micros(on.PostgresCPU), micros(on.NATSCPU),
			micros(on.MachineCPU), micros(off.MachineCPU))
}

// backlogLine is the outbox's backlog through each of the events-on
// service's runs of a workload, and whether it stayed flat.
func backlogLine(name string, runs []serverRun) string {
	var rounds, grew, undrained []string
	var published, failures float64
	var missed int
	var slowest time.Duration
	for i, run := range runs {
		b := run.Backlog
		if b == nil {
			continue
		}
		rounds = append(rounds, fmt.Sprintf("round %d %.0f, %.0f, %.0f", i+1, b.First, b.Last, b.Max))
		if !b.flat() {
			grew = append(grew, strconv.Itoa(i+1))
		}
		if !b.Drained {
			undrained = append(undrained, strconv.Itoa(i+1))
		}
		slowest = max(slowest, b.Drain)
		published += b.Published
		failures += b.PublishFailures
		missed += b.Missed
	}
	if len(rounds) == 0 {
		return name + ", events on: the outbox's backlog was not sampled"
	}
	line := fmt.Sprintf("%s, events on, users_events_pending every %s (first, last, max): %s", name, pendingEvery, strings.Join(rounds, "; "))
	if len(grew) > 0 {
		line += fmt.Sprintf("; grew in round %s (last above max(first, %d))", strings.Join(grew, ", "), flatBound)
	} else {
		line += fmt.Sprintf("; flat (last at most max(first, %d))", flatBound)
	}
	if len(undrained) > 0 {
		line += fmt.Sprintf("; the outbox not empty %s after round %s", drainTimeout, strings.Join(undrained, ", "))
	} else {
		line += fmt.Sprintf("; the outbox empty within %s of each run's end", slowest.Round(100*time.Millisecond))
	}
	line += fmt.Sprintf("; %.0f events published", published)
	if failures > 0 {
		line += fmt.Sprintf(", %.0f publishes failed", failures)
	}
	if missed > 0 {
		line += fmt.Sprintf("; %d scrapes of /metrics failed", missed)
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
