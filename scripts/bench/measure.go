package main

import (
	"context"
	"fmt"
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
	var poolBefore poolStats
	poolErr := fmt.Errorf("no pool counters")
	if srv.AdminAddr != "" {
		poolBefore, poolErr = scrapePool(ctx, srv.AdminAddr)
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
	r := newServerRun(res)
	if r.PeakRSS, err = peakRSS(pid); err != nil {
		return r, err
	}
	r.RSSNote = rssNote
	if poolErr == nil {
		if after, err := scrapePool(ctx, srv.AdminAddr); err == nil {
			use := after.since(poolBefore)
			r.Pool = &use
		}
	}
	return r, nil
}

// measureStatement runs pgbench on one statement sql, in the query file's
// syntax and bound as w says, run numbering pgbench's runs.
func measureStatement(ctx context.Context, pgbench, dbURL string, postmaster int, sql string, w workload, cfg config, run int) (statementRun, error) {
	r := statementRun{SQL: sql}
	script := w.pgbench.prelude + pgbenchStatement(sql, w.pgbench) + "\n"
	defines := append([]string{"users=" + strconv.FormatInt(cfg.users, 10), "run=" + strconv.Itoa(run)}, w.pgbench.defines...)
	before, err := pgbenchCPU(postmaster)
	if err != nil {
		return r, err
	}
	r.Pgbench, err = runPgbench(ctx, pgbench, withoutPoolSettings(dbURL), script, defines, cfg.concurrency, cfg.duration)
	if err != nil {
		return r, err
	}
	// pgbench's connections end with it; their processes' CPU counts once
	// the postmaster has reaped them.
	var after windowCPU
	for deadline := time.Now().Add(5 * time.Second); ; {
		if after, err = pgbenchCPU(postmaster); err != nil {
			return r, err
		}
		if after.children <= before.children || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n := r.Pgbench.Transactions; n > 0 {
		r.PostgresCPU = (after.postgres - before.postgres) / time.Duration(n)
		r.MachineCPU = (after.machine.Busy - before.machine.Busy) / time.Duration(n)
	}
	r.MachineBusy = after.machine.sub(before.machine).busyShare()
	return r, nil
}

// pgbenchCPU reads PostgreSQL's and the machine's CPU times, and how many
// server processes are alive.
func pgbenchCPU(postmaster int) (windowCPU, error) {
	var c windowCPU
	var err error
	if postmaster != 0 {
		if c.postgres, c.children, err = postgresCPU(postmaster); err != nil {
			return c, fmt.Errorf("PostgreSQL CPU: %w", err)
		}
	}
	c.machine, err = machineCPU()
	return c, err
}
