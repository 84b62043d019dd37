package main

import (
	"context"
	"strconv"
	"time"
)

// measureServer runs the load generator against one server for one
// workload, and adds what the server itself reports: its peak RSS, and
// for the service its pool's counters.
func measureServer(ctx context.Context, srv *server, postmaster int, w workload, cfg config, run int) (serverRun, error) {
	pid := srv.PID()
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
	res, err := runLoadgen(ctx, loadSpec{
		Addr:        srv.Addr,
		Workload:    w.name,
		Users:       cfg.users,
		Concurrency: cfg.concurrency,
		Warmup:      cfg.warmup,
		Duration:    cfg.duration,
		ServerPID:   pid,
		Postmaster:  postmaster,
		Seed:        uint64(time.Now().UnixNano()),
		Run:         run,
	})
	if err != nil {
		return serverRun{}, err
	}
	r := newServerRun(res, cfg.duration)
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
		CountBound:  res.CountBound,
	}
	if n := time.Duration(res.Calls); n > 0 {
		r.ServerCPU = res.CPU.Server / n
		r.LoadgenCPU = res.CPU.Self / n
		r.PostgresCPU = res.CPU.Postgres / n
		r.MachineCPU = res.CPU.Machine.Busy / n
	}
	return r
}

// measureStatement runs pgbench on one statement sql, in the query file's
// syntax and bound as w says, run numbering pgbench's runs.
func measureStatement(ctx context.Context, pgbench, dbURL string, postmaster int, sql string, w workload, cfg config, run int) (statementRun, error) {
	r := statementRun{SQL: sql}
	script := w.pgbench.prelude + pgbenchStatement(sql, w.pgbench) + "\n"
	defines := append([]string{"users=" + strconv.FormatInt(cfg.users, 10), "run=" + strconv.Itoa(run)}, w.pgbench.defines...)
	before, err := sampleCPU(0, postmaster)
	if err != nil {
		return r, err
	}
	r.Pgbench, err = runPgbench(ctx, pgbench, withoutPoolSettings(dbURL), script, defines, cfg.concurrency, cfg.duration)
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
