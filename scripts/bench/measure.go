package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"time"
)

// bench is what every measurement of a run shares: the settings, the
// database, pgbench, the servers (nil where a measurement needs none; the
// events-on service where no workload run needs it), and how many runs of
// the load generator and of pgbench it has made so far, by which first
// logins keep their keys apart.
type bench struct {
	cfg                   config
	db                    *database
	pgbench               string
	service, ref, floor   *server
	eventsOn              *server
	loadRuns, pgbenchRuns int
}

// measureWorkload drives the servers with w round after round, each round
// all in turn, so that a noisy neighbour's burst falls on all alike; then
// pgbench on the cheapest statement and on the service's own, sql. The
// events-on service, for a workload that writes, runs right after the
// service: what it leaves behind (the relay's last events) falls on the
// reference, not on the events-off service it is compared with.
func (b *bench) measureWorkload(ctx context.Context, w workload, sql string) (workloadResult, error) {
	r := workloadResult{Name: w.name, Target: w.target}
	type serverRuns struct {
		srv  *server
		runs *[]serverRun
	}
	servers := []serverRuns{{b.service, &r.Service}}
	if w.events && b.eventsOn != nil {
		servers = append(servers, serverRuns{b.eventsOn, &r.EventsOn})
	}
	servers = append(servers, serverRuns{b.ref, &r.Reference}, serverRuns{b.floor, &r.Floor})
	for round := range b.cfg.rounds {
		for _, s := range servers {
			logf("bench: %s: %s, round %d of %d", w.name, s.srv.Name, round+1, b.cfg.rounds)
			run, err := b.measureServer(ctx, s.srv, w)
			if err != nil {
				return r, fmt.Errorf("%s: %s: %w", w.name, s.srv.Name, err)
			}
			*s.runs = append(*s.runs, run)
		}
	}
	var err error
	logf("bench: %s: pgbench, the cheapest statement", w.name)
	if r.Cheapest, err = b.measureStatement(ctx, w, w.cheapest); err != nil {
		return r, fmt.Errorf("%s: %w", w.name, err)
	}
	if sameStatement(w.cheapest, sql) {
		r.Statement = r.Cheapest
		return r, nil
	}
	logf("bench: %s: pgbench, the service's statement", w.name)
	if r.Statement, err = b.measureStatement(ctx, w, sql); err != nil {
		return r, fmt.Errorf("%s: %w", w.name, err)
	}
	return r, nil
}

// measureServer runs the load generator against one server for one
// workload, and adds what the server itself reports: its peak RSS, and
// for the service its pool's counters.
func (b *bench) measureServer(ctx context.Context, srv *server, w workload) (serverRun, error) {
	pid, cfg := srv.PID(), b.cfg
	rssNote := ""
	if err := resetPeakRSS(pid); err != nil {
		rssNote = "peak since start: " + err.Error()
	}
	var poolBefore *poolStats
	if srv.AdminAddr != "" {
		if s, err := scrapePool(ctx, srv.AdminAddr); err == nil {
			poolBefore = &s
		}
	}
	var sampler *backlogSampler
	natsPID := 0
	if srv == b.eventsOn {
		natsPID = os.Getpid() // nats.go
		// Bounded as the load generator is, with time to spare for its
		// start.
		sampler = sampleBacklog(ctx, srv.AdminAddr, cfg.warmup+cfg.duration+callGrace+time.Minute)
	}
	res, err := runLoadgen(ctx, loadSpec{
		Addr:        srv.Addr,
		Server:      srv.Name,
		Workload:    w.name,
		Users:       cfg.users,
		Concurrency: cfg.concurrency,
		Warmup:      cfg.warmup,
		Duration:    cfg.duration,
		ServerPID:   pid,
		Postmaster:  b.db.Postmaster,
		NATSPID:     natsPID,
		Seed:        uint64(time.Now().UnixNano()),
		Run:         b.loadRuns,
	})
	b.loadRuns++
	var events *backlog
	if sampler != nil {
		bl := sampler.finish(ctx)
		events = &bl
	}
	if err != nil {
		return serverRun{}, err
	}
	r := newServerRun(res, cfg.duration)
	r.Backlog = events
	if r.PeakRSS, err = peakRSS(pid); err != nil {
		return r, err
	}
	r.RSSNote = rssNote
	if poolBefore != nil {
		if after, err := scrapePool(ctx, srv.AdminAddr); err == nil {
			use := after.since(*poolBefore)
			r.Pool = &use
		}
	}
	return r, nil
}

// newServerRun is the figures of one load generator run over a window.
func newServerRun(res loadResult, window time.Duration) serverRun {
	r := serverRun{
		RPS:         float64(res.Calls) / window.Seconds(),
		P50:         res.P50,
		P99:         res.P99,
		MachineBusy: res.CPU.Machine.busyShare(),
		Calls:       res.Calls,
		Errors:      res.Errors,
		FirstError:  res.FirstError,
		Unfinished:  res.Unfinished,
		CountBound:  res.CountBound,
	}
	if n := time.Duration(res.Calls); n > 0 {
		r.ServerCPU = res.CPU.Server / n
		r.LoadgenCPU = res.CPU.Self / n
		r.PostgresCPU = res.CPU.Postgres / n
		r.MachineCPU = res.CPU.Machine.Busy / n
		r.NATSCPU = res.NATS / n
	}
	return r
}

// measureStatement runs pgbench on one statement sql, in the query file's
// syntax and bound as w says.
func (b *bench) measureStatement(ctx context.Context, w workload, sql string) (statementRun, error) {
	r := statementRun{SQL: sql}
	cfg, postmaster, run := b.cfg, b.db.Postmaster, b.pgbenchRuns
	b.pgbenchRuns++
	script := w.pgbench.prelude + pgbenchStatement(sql, w.pgbench) + "\n"
	defines := append([]string{"users=" + strconv.FormatInt(cfg.users, 10), "run=" + strconv.Itoa(run)}, w.pgbench.defines...)
	before, err := sampleCPU(0, postmaster)
	if err != nil {
		return r, err
	}
	r.Pgbench, err = runPgbench(ctx, b.pgbench, withoutPoolSettings(b.db.URL), script, defines, cfg.concurrency, cfg.duration)
	if err != nil {
		return r, err
	}
	// pgbench's connections end with it; their processes' CPU counts once
	// the postmaster has reaped them.
	var after cpuSample
	for deadline := time.Now().Add(5 * time.Second); ; {
		if after, err = sampleCPU(0, postmaster); err != nil {
			return r, err
		}
		if after.Backends <= before.Backends || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	used := after.since(before)
	if n := time.Duration(r.Pgbench.Transactions); n > 0 {
		r.PostgresCPU = used.Postgres / n
		r.MachineCPU = used.Machine.Busy / n
	}
	r.MachineBusy = used.Machine.busyShare()
	return r, nil
}
