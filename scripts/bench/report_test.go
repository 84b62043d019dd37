package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func runsOf(rps ...float64) []serverRun {
	var out []serverRun
	for _, v := range rps {
		out = append(out, serverRun{RPS: v, Calls: int64(v)})
	}
	return out
}

func TestServiceOverReferenceIsTakenRoundByRound(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name         string
		service, ref []serverRun
		want         spread
	}{
		{"three rounds: the median round's ratio, and the extremes",
			runsOf(100, 300, 200), runsOf(200, 300, 100), spread{Median: 1, Min: 0.5, Max: 2}},
		{"a ratio pairs runs of one round, not the medians of each",
			runsOf(100, 400), runsOf(400, 100), spread{Median: 2.125, Min: 0.25, Max: 4}},
		{"a round whose reference did nothing is left out",
			runsOf(100, 100), runsOf(0, 50), spread{Median: 2, Min: 2, Max: 2}},
		{"no rounds", nil, nil, spread{}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			var rep report
			rep.add(workloadResult{Service: c.service, Reference: c.ref})
			if diff := cmp.Diff(c.want, rep.Workloads[0].Ratio); diff != "" {
				t.Errorf("ratio (-want +got):\n%s", diff)
			}
		})
	}
}

func TestSummaryWeighsCPUByCalls(t *testing.T) {
	t.Parallel()
	s := summarize([]serverRun{
		{RPS: 1000, P99: 3 * time.Millisecond, Calls: 1000, ServerCPU: 100 * time.Microsecond, PeakRSS: 10},
		{RPS: 3000, P99: 1 * time.Millisecond, Calls: 3000, ServerCPU: 60 * time.Microsecond, PeakRSS: 30},
		{RPS: 2000, P99: 2 * time.Millisecond, Calls: 2000, ServerCPU: 80 * time.Microsecond, PeakRSS: 20},
	})
	// (1000*100 + 3000*60 + 2000*80) / 6000 = 73.33µs
	want := summary{RPS: 2000, P99: float64(2 * time.Millisecond), ServerCPU: 440 * time.Microsecond / 6, PeakRSS: 30}
	if diff := cmp.Diff(want, s); diff != "" {
		t.Errorf("summary (-want +got):\n%s", diff)
	}
}

func TestReportShowsBothStatementsAndTheFloor(t *testing.T) {
	t.Parallel()
	rep := report{Machine: machine{Rounds: 2}}
	cheap := statementRun{SQL: "SELECT 1;", Pgbench: pgbenchResult{TPS: 4000}}
	rep.add(workloadResult{
		Name: "BatchGetUsers", Service: runsOf(1000, 1200), Reference: runsOf(2000, 2000), Floor: runsOf(9000, 9100),
		Cheapest: cheap, Statement: statementRun{SQL: "SELECT 1\nORDER BY 1;", Pgbench: pgbenchResult{TPS: 2000}},
	})
	rep.add(workloadResult{Name: "GetUser", Service: runsOf(1000), Reference: runsOf(1000), Floor: runsOf(5000),
		Cheapest: cheap, Statement: statementRun{SQL: "SELECT\n  1;", Pgbench: pgbenchResult{TPS: 4000}}})
	var out bytes.Buffer
	rep.print(&out)
	for _, want := range []string{
		"| BatchGetUsers |        1100 |          2000 |            0.55 (0.50–0.60) |",
		"9050 |",                 // the floor's median RPS
		"|               0.50 |", // the service's statement at half the cheapest's rate
		"cheapest: SELECT 1;\n  service:  SELECT 1 ORDER BY 1;",
		"GetUser: SELECT 1; (the service's own)",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the report lacks %q:\n%s", want, out.String())
		}
	}
}

func TestReportComparesTheServicesRoundByRound(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name      string
		workloads []workloadResult
		want      string // "" for no comparison
	}{
		{"each round's ratio, the median round's and the extremes",
			[]workloadResult{
				{Name: "GetUser", Service: runsOf(1000, 2000, 1000)},
				{Name: "ResolveAPIToken", Service: runsOf(900, 2000, 1100)},
			},
			"\nservice RPS, ResolveAPIToken/GetUser: 1.00 (0.90–1.10); by round 0.90, 1.00, 1.10\n"},
		{"a median below the target says so",
			[]workloadResult{
				{Name: "ResolveAPIToken", Service: runsOf(800, 840)},
				{Name: "GetUser", Service: runsOf(1000, 1000)},
			},
			"\nservice RPS, ResolveAPIToken/GetUser: 0.82 (0.80–0.84); by round 0.80, 0.84; below the target 0.90\n"},
		{"no comparison unless both ran",
			[]workloadResult{{Name: "GetUser", Service: runsOf(1000)}}, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			rep := report{Workloads: c.workloads}
			var out bytes.Buffer
			rep.print(&out)
			got := out.String()
			if (c.want == "" && strings.Contains(got, "ResolveAPIToken/GetUser")) || !strings.Contains(got, c.want) {
				t.Errorf("the report should have %q:\n%s", c.want, got)
			}
		})
	}
}

func TestFailuresNameTheServerAndRound(t *testing.T) {
	t.Parallel()
	rep := report{Workloads: []workloadResult{{
		Name:      "GetUser",
		Reference: []serverRun{{}, {Calls: 10, Errors: map[string]int64{"Internal": 3}, FirstError: "boom"}},
		Cheapest:  statementRun{SQL: "SELECT 1;", Pgbench: pgbenchResult{Failed: 2}},
	}}}
	err := rep.failures()
	if err == nil {
		t.Fatal("no failures reported")
	}
	for _, want := range []string{
		"GetUser, reference, round 1: no call finished within the window",
		"GetUser, reference, round 2: 3 calls failed with Internal (first: boom)",
		"GetUser: 2 pgbench transactions failed: SELECT 1;",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("failures lack %q:\n%v", want, err)
		}
	}
}

// withBacklogs gives runs the backlogs, round by round.
func withBacklogs(runs []serverRun, backlogs ...backlog) []serverRun {
	for i := range runs {
		runs[i].Backlog = &backlogs[i]
	}
	return runs
}

func TestReportComparesEventsOnWithEventsOff(t *testing.T) {
	t.Parallel()
	drained := func(first, last, max float64) backlog {
		return backlog{First: first, Last: last, Max: max, Samples: 20, Published: 1000, Drain: 250 * time.Millisecond, Drained: true}
	}
	for _, c := range []struct {
		name     string
		workload workloadResult
		want     []string
	}{
		{"each round's ratio, the median round's and the extremes, and each round's backlog",
			workloadResult{Name: "UpdateUser", Service: runsOf(1000, 2000, 1000),
				EventsOn: withBacklogs(runsOf(900, 1900, 1000), drained(0, 120, 800), drained(3, 0, 950), drained(0, 60, 400))},
			[]string{
				"\nservice RPS, UpdateUser, events on/events off: 0.95 (0.90–1.00); by round 0.90, 0.95, 1.00; events on: 1000 RPS,",
				"\nUpdateUser, events on, users_events_pending every 1s (first, last, max): round 1 0, 120, 800; round 2 3, 0, 950; round 3 0, 60, 400; flat (last at most max(first, 2000)); the outbox empty within 300ms of each run's end; 3000 events published\n",
			}},
		{"a median below the target, a backlog that grew and one that did not drain say so",
			workloadResult{Name: "ResolveOrCreateUser new", Service: runsOf(1000, 1000),
				EventsOn: withBacklogs(runsOf(800, 900), drained(0, 200, 300), backlog{First: 0, Last: 9000, Max: 9000, Samples: 20, Published: 500, PublishFailures: 7, Missed: 2})},
			[]string{
				"\nservice RPS, ResolveOrCreateUser new, events on/events off: 0.85 (0.80–0.90); by round 0.80, 0.90; events on:",
				"round 1 0, 200, 300; round 2 0, 9000, 9000; grew in round 2 (last above max(first, 2000)); the outbox not empty 15s after round 2; 1500 events published, 7 publishes failed; 2 scrapes of /metrics failed\n",
			}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			var rep report
			rep.add(c.workload)
			var out bytes.Buffer
			rep.print(&out)
			for _, want := range c.want {
				if !strings.Contains(out.String(), want) {
					t.Errorf("the report lacks %q:\n%s", want, out.String())
				}
			}
		})
	}
	t.Run("below the target", func(t *testing.T) {
		t.Parallel()
		var rep report
		rep.add(workloadResult{Name: "UpdateUser", Service: runsOf(1000, 1000, 1000), EventsOn: runsOf(800, 840, 900)})
		var out bytes.Buffer
		rep.print(&out)
		if want := "events on/events off: 0.84 (0.80–0.90); by round 0.80, 0.84, 0.90; below the target 0.85; events on:"; !strings.Contains(out.String(), want) {
			t.Errorf("the report lacks %q:\n%s", want, out.String())
		}
		if want := "the outbox's backlog was not sampled"; !strings.Contains(out.String(), want) {
			t.Errorf("the report lacks %q:\n%s", want, out.String())
		}
	})
	t.Run("no events line without an events-on run", func(t *testing.T) {
		t.Parallel()
		var rep report
		rep.add(workloadResult{Name: "UpdateUser", Service: runsOf(1000)})
		var out bytes.Buffer
		rep.print(&out)
		if strings.Contains(out.String(), "events on") || rep.Workloads[0].EventsRatio != nil {
			t.Errorf("events reported with no events-on run:\n%s", out.String())
		}
	})
}

func TestFailuresNameTheEventsOnService(t *testing.T) {
	t.Parallel()
	rep := report{Workloads: []workloadResult{{
		Name:     "UpdateUser",
		Service:  runsOf(1000),
		EventsOn: []serverRun{{Calls: 10, Errors: map[string]int64{"Unavailable": 1}, FirstError: "gone"}},
	}}}
	err := rep.failures()
	if want := "UpdateUser, service-events, round 1: 1 calls failed with Unavailable (first: gone)"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("failures: %v, want %q", err, want)
	}
}
