package main

import (
	"context"
	"fmt"
	"strconv"
	"time"
)

// measureService runs the load generator against the service for one
// workload and adds what the service itself reports.
func measureService(ctx context.Context, svc *service, postmaster int, w workload, cfg config) (workloadResult, error) {
	pid := svc.PID()
	rssNote := ""
	if err := resetPeakRSS(pid); err != nil {
		rssNote = "peak since start: " + err.Error()
	}
	poolBefore, poolErr := scrapePool(ctx, svc.AdminAddr)
	res, err := runLoadgen(ctx, loadSpec{
		Addr:        svc.Addr,
		Workload:    w.name,
		Users:       cfg.users,
		Concurrency: cfg.concurrency,
		Warmup:      cfg.warmup,
		Duration:    cfg.duration,
		ServicePID:  pid,
		Postmaster:  postmaster,
		Seed:        uint64(time.Now().UnixNano()),
	})
	if err != nil {
		return workloadResult{}, err
	}
	r := newWorkloadResult(w, res)
	if r.ServicePeakRSS, err = peakRSS(pid); err != nil {
		return r, err
	}
	r.RSSNote = rssNote
	if poolErr == nil {
		if after, err := scrapePool(ctx, svc.AdminAddr); err == nil {
			use := after.since(poolBefore)
			r.Pool = &use
		}
	}
	return r, nil
}

// measurePgbench runs pgbench for one workload, the workload's statement
// sql bound as w says, and adds its figures to r.
func measurePgbench(ctx context.Context, pgbench, dbURL string, postmaster int, sql string, w workload, cfg config, r *workloadResult) error {
	script := w.pgbench.prelude + pgbenchStatement(sql, w.pgbench) + "\n"
	defines := append([]string{"users=" + strconv.FormatInt(cfg.users, 10)}, w.pgbench.defines...)
	before, err := pgbenchCPU(postmaster)
	if err != nil {
		return err
	}
	r.Pgbench, err = runPgbench(ctx, pgbench, withoutPoolSettings(dbURL), script, defines, cfg.concurrency, cfg.duration)
	if err != nil {
		return err
	}
	// pgbench's connections end with it; their processes' CPU counts once
	// the postmaster has reaped them.
	var after windowCPU
	for deadline := time.Now().Add(5 * time.Second); ; {
		if after, err = pgbenchCPU(postmaster); err != nil {
			return err
		}
		if after.children <= before.children || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n := r.Pgbench.Transactions; n > 0 {
		r.PgbenchPostgresCPU = (after.postgres - before.postgres) / time.Duration(n)
		r.PgbenchMachineCPU = (after.machine.Busy - before.machine.Busy) / time.Duration(n)
	}
	r.PgbenchBusy = after.machine.sub(before.machine).busyShare()
	return nil
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
