package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// report is everything a run measured, as the table shows it and as the
// JSON file holds it.
type report struct {
	Machine      machine          `json:"machine"`
	SeedSeconds  float64          `json:"seed_seconds"`
	TotalSeconds float64          `json:"total_seconds"`
	Workloads    []workloadResult `json:"workloads"`
}

type machine struct {
	Cores       int               `json:"cores"`
	CPU         string            `json:"cpu"`
	Go          string            `json:"go"`
	PostgreSQL  string            `json:"postgresql"`
	Server      string            `json:"server"`
	Settings    map[string]string `json:"settings"`
	Pgbench     string            `json:"pgbench"`
	Users       int64             `json:"users"`
	Concurrency int               `json:"concurrency"`
	Duration    string            `json:"duration"`
	Warmup      string            `json:"warmup"`
	ServiceDB   string            `json:"service_db_params,omitempty"`
}

type workloadResult struct {
	Name       string        `json:"name"`
	ServiceRPS float64       `json:"service_rps"`
	P50        time.Duration `json:"p50_ns"`
	P99        time.Duration `json:"p99_ns"`
	PgbenchTPS float64       `json:"pgbench_tps"`
	Ratio      float64       `json:"service_over_pgbench"`
	Target     float64       `json:"target"`
	ServiceCPU time.Duration `json:"service_cpu_per_call_ns"`
	LoadgenCPU time.Duration `json:"loadgen_cpu_per_call_ns"`
	// ServicePeakRSS is the service's VmHWM over this workload.
	ServicePeakRSS int64            `json:"service_peak_rss_bytes"`
	RSSNote        string           `json:"rss_note,omitempty"`
	Calls          int64            `json:"calls"`
	Errors         map[string]int64 `json:"errors,omitempty"`
	FirstError     string           `json:"first_error,omitempty"`
	CountBound     bool             `json:"count_bound,omitempty"`
	Pool           *poolUse         `json:"pool,omitempty"`
	Pgbench        pgbenchResult    `json:"pgbench"`
	// PostgreSQL's CPU per call through the service and per pgbench
	// transaction (zero if the server's processes are not visible here),
	// the whole machine's (anything else running included), and how busy
	// the machine's CPUs were during each run.
	PostgresCPU        time.Duration `json:"postgres_cpu_per_call_ns"`
	PgbenchPostgresCPU time.Duration `json:"pgbench_postgres_cpu_per_transaction_ns"`
	MachineCPU         time.Duration `json:"machine_cpu_per_call_ns"`
	PgbenchMachineCPU  time.Duration `json:"pgbench_machine_cpu_per_transaction_ns"`
	MachineBusy        float64       `json:"machine_busy_share"`
	PgbenchBusy        float64       `json:"pgbench_machine_busy_share"`
}

func newReport(cfg config, db *database, pgbench string, seedTime time.Duration) *report {
	return &report{
		Machine: machine{
			Cores:       runtime.NumCPU(),
			CPU:         cpuModel(),
			Go:          runtime.Version(),
			PostgreSQL:  db.Version,
			Server:      db.Describe,
			Settings:    db.Settings,
			Pgbench:     pgbench,
			Users:       cfg.users,
			Concurrency: cfg.concurrency,
			Duration:    cfg.duration.String(),
			Warmup:      cfg.warmup.String(),
			ServiceDB:   cfg.serviceDB,
		},
		SeedSeconds: seedTime.Seconds(),
	}
}

func newWorkloadResult(w workload, res loadResult) workloadResult {
	r := workloadResult{
		Name:       w.name,
		Target:     w.target,
		ServiceRPS: float64(res.Calls) / res.Window.Seconds(),
		P50:        res.P50,
		P99:        res.P99,
		Calls:      res.Calls,
		Errors:     res.Errors,
		FirstError: res.FirstError,
		CountBound: res.CountBound,
	}
	if res.Calls > 0 {
		r.ServiceCPU = res.ServiceCPU / time.Duration(res.Calls)
		r.LoadgenCPU = res.LoadgenCPU / time.Duration(res.Calls)
		r.PostgresCPU = res.Postgres / time.Duration(res.Calls)
		r.MachineCPU = res.Machine.Busy / time.Duration(res.Calls)
	}
	r.MachineBusy = res.Machine.busyShare()
	return r
}

func (r *report) add(w workloadResult) {
	if w.Pgbench.TPS > 0 {
		w.PgbenchTPS = w.Pgbench.TPS
		w.Ratio = w.ServiceRPS / w.Pgbench.TPS
	}
	r.Workloads = append(r.Workloads, w)
}

func (r *report) print(out io.Writer) {
	m := r.Machine
	fmt.Fprintf(out, "\n%d cores (%s), PostgreSQL %s (%s), %s\n", m.Cores, m.CPU, m.PostgreSQL, m.Server, m.Go)
	var settings []string
	for _, k := range slices.Sorted(maps.Keys(m.Settings)) {
		settings = append(settings, k+"="+m.Settings[k])
	}
	fmt.Fprintf(out, "server: %s\n", strings.Join(settings, " "))
	fmt.Fprintf(out, "N=%d users, concurrency %d, %s per workload for the service (after %s of warm-up) and %s for pgbench; seed %.0fs, total %.0fs\n",
		m.Users, m.Concurrency, m.Duration, m.Warmup, m.Duration, r.SeedSeconds, r.TotalSeconds)
	if m.ServiceDB != "" {
		fmt.Fprintf(out, "service DATABASE_URL settings: %s\n", m.ServiceDB)
	}
	fmt.Fprintln(out)

	rows := [][]string{{"workload", "service RPS", "p50", "p99", "pgbench TPS", "service/pgbench", "service CPU/call", "loadgen CPU/call", "service peak RSS"}}
	for _, w := range r.Workloads {
		rows = append(rows, []string{w.Name, fmt.Sprintf("%.0f", w.ServiceRPS), latency(w.P50), latency(w.P99),
			fmt.Sprintf("%.0f", w.PgbenchTPS), fmt.Sprintf("%.2f", w.Ratio),
			micros(w.ServiceCPU), micros(w.LoadgenCPU), fmt.Sprintf("%d MiB", w.ServicePeakRSS>>20)})
	}
	markdownTable(out, rows)

	fmt.Fprintln(out)
	for _, w := range r.Workloads {
		var notes []string
		if w.Ratio < w.Target {
			notes = append(notes, fmt.Sprintf("ratio %.2f below the target %.2f", w.Ratio, w.Target))
		}
		notes = append(notes, fmt.Sprintf("CPU per call through the service: PostgreSQL %s, machine %s (busy %.0f%%); per pgbench transaction: PostgreSQL %s, machine %s (busy %.0f%%)",
			micros(w.PostgresCPU), micros(w.MachineCPU), 100*w.MachineBusy,
			micros(w.PgbenchPostgresCPU), micros(w.PgbenchMachineCPU), 100*w.PgbenchBusy))
		if w.Pool != nil {
			notes = append(notes, fmt.Sprintf("pool of %.0f: %.0f%% of acquires waited, mean acquire %s (wall time)",
				w.Pool.MaxConns, 100*w.Pool.WaitedShare, micros(w.Pool.MeanWait)))
		}
		if w.CountBound {
			notes = append(notes, "stopped at the call-count bound")
		}
		if w.RSSNote != "" {
			notes = append(notes, "RSS "+w.RSSNote)
		}
		if len(notes) > 0 {
			fmt.Fprintf(out, "%s: %s\n", w.Name, strings.Join(notes, "; "))
		}
	}
}

func (r *report) writeJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// failures is an error naming every workload with a failed call, in the
// service or in pgbench.
func (r *report) failures() error {
	var msgs []string
	for _, w := range r.Workloads {
		for _, code := range slices.Sorted(maps.Keys(w.Errors)) {
			msgs = append(msgs, fmt.Sprintf("%s: %d calls failed with %s (first: %s)", w.Name, w.Errors[code], code, w.FirstError))
		}
		if w.Pgbench.Failed > 0 {
			msgs = append(msgs, fmt.Sprintf("%s: %d pgbench transactions failed", w.Name, w.Pgbench.Failed))
		}
	}
	if len(msgs) > 0 {
		return fmt.Errorf("failed calls:\n  %s", strings.Join(msgs, "\n  "))
	}
	return nil
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

// cpuModel is the processor's name from /proc/cpuinfo, if it says.
func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return runtime.GOARCH
	}
	for line := range strings.Lines(string(b)) {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return runtime.GOARCH
}
