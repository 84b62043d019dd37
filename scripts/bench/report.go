package main

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"
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
	Rounds      int               `json:"rounds"`
	ServiceDB   string            `json:"service_db_params,omitempty"`
}

// The servers under measurement, as the report names them.
const (
	serviceName   = "service"
	referenceName = "reference"
	floorName     = "floor"
)

// workloadResult is one workload's figures: each server's runs, one per
// round, and pgbench's on the two statements.
type workloadResult struct {
	Name      string      `json:"name"`
	Target    float64     `json:"target"`
	Service   []serverRun `json:"service"`
	Reference []serverRun `json:"reference"`
	Floor     []serverRun `json:"floor"`
	// Ratio is service RPS over reference RPS, round by round.
	Ratio spread `json:"service_over_reference"`
	// EventsOn are the events-on service's runs, for a workload that
	// writes (events.go), and EventsRatio their RPS over the service's,
	// the events-off one, round by round.
	EventsOn    []serverRun `json:"events_on,omitempty"`
	EventsRatio *spread     `json:"events_on_over_off,omitempty"`
	// Cheapest is pgbench on the cheapest statement that returns the
	// same rows; Statement on the service's own, from the query file.
	Cheapest  statementRun `json:"cheapest_statement"`
	Statement statementRun `json:"service_statement"`
}

// serverRun is one run of the load generator against one server.
type serverRun struct {
	RPS float64       `json:"rps"`
	P50 time.Duration `json:"p50_ns"`
	P99 time.Duration `json:"p99_ns"`
	// CPU per call: the server's, the load generator's, PostgreSQL's (zero
	// if the server's processes are not visible here), and the whole
	// machine's (anything else running included).
	ServerCPU   time.Duration `json:"server_cpu_per_call_ns"`
	LoadgenCPU  time.Duration `json:"loadgen_cpu_per_call_ns"`
	PostgresCPU time.Duration `json:"postgres_cpu_per_call_ns"`
	MachineCPU  time.Duration `json:"machine_cpu_per_call_ns"`
	MachineBusy float64       `json:"machine_busy_share"`
	// NATSCPU is the NATS server's, for the events-on service: the
	// bench's process, which it runs in (nats.go).
	NATSCPU time.Duration `json:"nats_cpu_per_call_ns,omitempty"`
	// PeakRSS is the server's VmHWM over this run.
	PeakRSS    int64            `json:"peak_rss_bytes"`
	RSSNote    string           `json:"rss_note,omitempty"`
	Calls      int64            `json:"calls"`
	Errors     map[string]int64 `json:"errors,omitempty"`
	FirstError string           `json:"first_error,omitempty"`
	// Unfinished counts calls cancelled at the run's end (loadResult).
	Unfinished int64    `json:"unfinished,omitempty"`
	CountBound bool     `json:"count_bound,omitempty"`
	Pool       *poolUse `json:"pool,omitempty"`
	// Backlog is the outbox's, on the events-on service.
	Backlog *backlog `json:"events_backlog,omitempty"`
}

// statementRun is one pgbench run on one statement.
type statementRun struct {
	SQL     string        `json:"sql"`
	Pgbench pgbenchResult `json:"pgbench"`
	// PostgreSQL's and the machine's CPU per transaction, and how busy the
	// machine's CPUs were.
	PostgresCPU time.Duration `json:"postgres_cpu_per_transaction_ns"`
	MachineCPU  time.Duration `json:"machine_cpu_per_transaction_ns"`
	MachineBusy float64       `json:"machine_busy_share"`
}

// spread is a figure measured over rounds: the median and the extremes.
type spread struct {
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
}

func spreadOf(v []float64) spread {
	if len(v) == 0 {
		return spread{}
	}
	s := slices.Sorted(slices.Values(v))
	median := s[len(s)/2]
	if len(s)%2 == 0 {
		median = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return spread{Median: median, Min: s[0], Max: s[len(s)-1]}
}

// ratios are a[i]/b[i] for each round both measured.
func ratios(a, b []serverRun) []float64 {
	var out []float64
	for i := range min(len(a), len(b)) {
		if b[i].RPS > 0 {
			out = append(out, a[i].RPS/b[i].RPS)
		}
	}
	return out
}

// serviceRatios are the service's RPS in workload a over its RPS in
// workload b, round by round; none unless both ran. Round i of one is
// paired with round i of the other, which ran minutes apart: the spread
// shows how much the machine drifted meanwhile.
func (r *report) serviceRatios(a, b string) []float64 {
	var wa, wb *workloadResult
	for i := range r.Workloads {
		switch r.Workloads[i].Name {
		case a:
			wa = &r.Workloads[i]
		case b:
			wb = &r.Workloads[i]
		}
	}
	if wa == nil || wb == nil {
		return nil
	}
	return ratios(wa.Service, wb.Service)
}

// summary is a server's runs of one workload taken together: rates and
// latencies are the median round's, CPU per call is over all the calls.
type summary struct {
	RPS, P99                                       float64
	ServerCPU, LoadgenCPU, PostgresCPU, MachineCPU time.Duration
	NATSCPU                                        time.Duration
	PeakRSS                                        int64
}

func summarize(runs []serverRun) summary {
	var s summary
	var rps, p99 []float64
	var calls int64
	var server, loadgen, postgres, machine, nats time.Duration
	for _, r := range runs {
		rps = append(rps, r.RPS)
		p99 = append(p99, float64(r.P99))
		calls += r.Calls
		server += r.ServerCPU * time.Duration(r.Calls)
		loadgen += r.LoadgenCPU * time.Duration(r.Calls)
		postgres += r.PostgresCPU * time.Duration(r.Calls)
		machine += r.MachineCPU * time.Duration(r.Calls)
		nats += r.NATSCPU * time.Duration(r.Calls)
		s.PeakRSS = max(s.PeakRSS, r.PeakRSS)
	}
	s.RPS, s.P99 = spreadOf(rps).Median, spreadOf(p99).Median
	if calls > 0 {
		n := time.Duration(calls)
		s.ServerCPU, s.LoadgenCPU, s.PostgresCPU, s.MachineCPU, s.NATSCPU = server/n, loadgen/n, postgres/n, machine/n, nats/n
	}
	return s
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
			Rounds:      cfg.rounds,
			ServiceDB:   cfg.serviceDB,
		},
		SeedSeconds: seedTime.Seconds(),
	}
}

func (r *report) add(w workloadResult) {
	w.Ratio = spreadOf(ratios(w.Service, w.Reference))
	if len(w.EventsOn) > 0 {
		s := spreadOf(ratios(w.EventsOn, w.Service))
		w.EventsRatio = &s
	}
	r.Workloads = append(r.Workloads, w)
}

// meanPool is the service's pool use averaged over its runs, or nil if
// none has the counters.
func meanPool(runs []serverRun) *poolUse {
	var sum poolUse
	n := 0
	for _, r := range runs {
		if r.Pool != nil {
			sum.MaxConns = r.Pool.MaxConns
			sum.WaitedShare += r.Pool.WaitedShare
			sum.MeanWait += r.Pool.MeanWait
			n++
		}
	}
	if n == 0 {
		return nil
	}
	sum.WaitedShare /= float64(n)
	sum.MeanWait /= time.Duration(n)
	return &sum
}

// oneLine is a statement with its whitespace collapsed.
func oneLine(sql string) string { return strings.Join(strings.Fields(sql), " ") }

// sameStatement says whether two statements differ in whitespace only.
func sameStatement(a, b string) bool { return oneLine(a) == oneLine(b) }

func divide(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

func (r *report) writeJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// failures is an error naming every workload with a failed call, in the
// service or in pgbench, or with a run in which no call finished.
func (r *report) failures() error {
	var msgs []string
	for _, w := range r.Workloads {
		for name, runs := range map[string][]serverRun{serviceName: w.Service, eventsName: w.EventsOn, referenceName: w.Reference, floorName: w.Floor} {
			for i, run := range runs {
				if run.Calls == 0 {
					msgs = append(msgs, fmt.Sprintf("%s, %s, round %d: no call finished within the window", w.Name, name, i+1))
				}
				for _, code := range slices.Sorted(maps.Keys(run.Errors)) {
					msgs = append(msgs, fmt.Sprintf("%s, %s, round %d: %d calls failed with %s (first: %s)", w.Name, name, i+1, run.Errors[code], code, run.FirstError))
				}
			}
		}
		for _, st := range []statementRun{w.Cheapest, w.Statement} {
			if st.Pgbench.Failed > 0 {
				msgs = append(msgs, fmt.Sprintf("%s: %d pgbench transactions failed: %s", w.Name, st.Pgbench.Failed, oneLine(st.SQL)))
			}
		}
	}
	slices.Sort(msgs)
	if len(msgs) > 0 {
		return fmt.Errorf("failed calls:\n  %s", strings.Join(msgs, "\n  "))
	}
	return nil
}
