package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// The load generator runs in a process of its own (this program, started
// with loadgenArg), so that the CPU time it reports is its own and nothing
// else's: the bench process around it holds a database connection and
// starts pgbench, and would blur the figure.
const loadgenArg = "loadgen"

// loadSpec is what the bench asks of a load generator process.
type loadSpec struct {
	Addr        string
	Workload    string
	Users       int64
	Concurrency int
	Warmup      time.Duration
	Duration    time.Duration
	ServerPID   int // the server under load
	Postmaster  int // 0: PostgreSQL's CPU time is not visible
	Seed        uint64
	Run         int // numbers the runs of one bench, from 0
}

// loadResult is what it reports: calls, latencies and CPU times within
// the measured window (after the warm-up), errors over the whole run.
type loadResult struct {
	Calls    int64
	P50, P99 time.Duration
	// CPU is the window's: Self is the load generator's, Server the
	// server's, Postgres all of PostgreSQL's processes', Machine
	// everything on the machine.
	CPU        cpuSample
	Errors     map[string]int64 // by status code
	FirstError string
	// CountBound says a worker stopped at maxCallsPerWorker before the
	// time was up: the figures cover less than the window.
	CountBound bool
}

// runLoadgen runs a load generator process and returns its report.
func runLoadgen(ctx context.Context, spec loadSpec) (loadResult, error) {
	self, err := os.Executable()
	if err != nil {
		return loadResult{}, err
	}
	in, err := json.Marshal(spec)
	if err != nil {
		return loadResult{}, err
	}
	cmd := exec.CommandContext(ctx, self, loadgenArg)
	var out bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = bytes.NewReader(in), &out, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Run(); err != nil {
		return loadResult{}, fmt.Errorf("load generator: %w", err)
	}
	var res loadResult
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		return loadResult{}, fmt.Errorf("load generator: %w", err)
	}
	return res, nil
}

// loadgenMain is the load generator process: a loadSpec on stdin, a
// loadResult on stdout.
func loadgenMain() int {
	var spec loadSpec
	if err := json.NewDecoder(os.Stdin).Decode(&spec); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		return 2
	}
	res, err := generateLoad(spec)
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		return 1
	}
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		return 1
	}
	return 0
}
