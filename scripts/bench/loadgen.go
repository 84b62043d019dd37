package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// The load generator is this program's own because a general load tool
// spends as much CPU per call as the server it drives, and on a
// machine of two cores that would halve what the server can show. This
// one encodes its requests ahead (requests.go), leaves the answers
// undecoded (rawCodec) and counts latencies in a histogram, so that its
// CPU goes to gRPC. It runs in a process of its own (this program,
// started with loadgenArg), so that the CPU time it reports is its own
// and nothing else's: the bench process around it holds a database
// connection and starts pgbench, and would blur the figure.
const loadgenArg = "loadgen"

// loadSpec is what the bench asks of a load generator process.
type loadSpec struct {
	Addr        string
	Server      string // serviceName, referenceName or floorName
	Workload    string
	Users       int64
	Concurrency int
	Warmup      time.Duration
	Duration    time.Duration
	ServerPID   int // the server under load
	Postmaster  int // 0: PostgreSQL's CPU time is not visible
	Seed        uint64
	Run         int // numbers the runs of one bench, from 0
	// NATSPID is the process the NATS server runs in (the bench's), when
	// the server under load publishes to it; else 0.
	NATSPID int
}

// loadResult is what it reports: calls, latencies and CPU times within
// the measured window (after the warm-up), errors over the whole run.
type loadResult struct {
	Calls    int64
	P50, P99 time.Duration
	// CPU is the window's: Self is the load generator's, Server the
	// server's, Postgres all of PostgreSQL's processes', Machine
	// everything on the machine; NATS is NATSPID's.
	CPU        cpuSample
	NATS       time.Duration
	Errors     map[string]int64 // by status code
	FirstError string
	// Unfinished counts the calls still running when the run's time and
	// callGrace were up, cancelled then: neither counted nor failed (see
	// generateLoad).
	Unfinished int64
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

const (
	// callsPerConn is how many in-flight calls share one HTTP/2
	// connection: more connections, so that no single connection's
	// framing (one reader, one writer goroutine) limits the rate.
	callsPerConn = 8
	// maxCallsPerWorker bounds each worker's loop in count as well as
	// in time.
	maxCallsPerWorker = 10_000_000
	// callGrace is how long a call may outlast the run before it is
	// cancelled.
	callGrace = 10 * time.Second
	// identityHeader is the metadata in which the platform's gateway
	// names the caller (IdentityHeader in internal/server).
	identityHeader = "x-identity-id"
)

// rawCodec sends requests encoded ahead (a *mem.BufferSlice) as they are
// and leaves responses undecoded: the status alone says whether a call
// worked, and decoding would be the load generator's cost, not the
// service's.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) { return *v.(*mem.BufferSlice), nil }
func (rawCodec) Unmarshal(mem.BufferSlice, any) error   { return nil }
func (rawCodec) Name() string                           { return "proto" }

// Latencies are counted in nanoseconds in an HDR histogram of three
// significant digits: a percentile is within 0.1% of the true one, and
// recording one is an increment, with no allocation and nothing to sort,
// so that the load generator spends its CPU on calls. A call slower than
// maxLatency counts as maxLatency.
const (
	maxLatency    = time.Minute
	latencyDigits = 3
)

func newLatencies() *hdrhistogram.Histogram {
	return hdrhistogram.New(1, int64(maxLatency), latencyDigits)
}

func recordLatency(h *hdrhistogram.Histogram, d time.Duration) {
	h.RecordValue(int64(min(max(d, 0), maxLatency))) //nolint:errcheck // in range
}

// workerStats is what one worker counts; merged when the run ends.
type workerStats struct {
	latencies  *hdrhistogram.Histogram
	calls      int64
	unfinished int64
	errors     map[string]int64
	firstError string
	countBound bool
}

func generateLoad(spec loadSpec) (loadResult, error) {
	w, ok := workloadByName(spec.Workload)
	if !ok {
		return loadResult{}, fmt.Errorf("unknown workload %q", spec.Workload)
	}
	requests := w.requests
	if spec.Server == referenceName && w.referenceRequests != nil {
		requests = w.referenceRequests
	}
	src, err := requests(spec.Users, spec.Run, rand.New(rand.NewPCG(spec.Seed, 0)))
	if err != nil {
		return loadResult{}, err
	}
	conns, err := dial(spec.Addr, (spec.Concurrency+callsPerConn-1)/callsPerConn)
	for _, cc := range conns {
		defer cc.Close()
	}
	if err != nil {
		return loadResult{}, err
	}
	stats := make([]workerStats, spec.Concurrency)
	for i := range stats {
		stats[i] = workerStats{latencies: newLatencies(), errors: map[string]int64{}}
	}
	runtime.GC() // the pool's garbage, now rather than during the run

	start := time.Now()
	from := start.Add(spec.Warmup)
	until := from.Add(spec.Duration)
	ctx, cancel := context.WithDeadline(context.Background(), until.Add(callGrace))
	defer cancel()

	var wg sync.WaitGroup
	for i := range spec.Concurrency {
		wg.Go(func() {
			st := &stats[i]
			wk := &worker{rng: rand.New(rand.NewPCG(spec.Seed, uint64(i)+1))}
			var sink struct{}
			cc := conns[i/callsPerConn]
			for wk.calls < maxCallsPerWorker {
				req := src.next(wk)
				t0 := time.Now()
				if !t0.Before(until) {
					return
				}
				callCtx := ctx
				if req.caller != "" {
					callCtx = metadata.AppendToOutgoingContext(ctx, identityHeader, req.caller)
				}
				err := cc.Invoke(callCtx, w.method, &req.msg, &sink)
				t1 := time.Now()
				wk.calls++
				if err != nil && ctx.Err() != nil {
					// Cancelled by the run's end, callGrace after its
					// window: a server that slow (the reference's OFFSET
					// pages, deep in a large table) shows in its rate and
					// a note, not as a failure.
					st.unfinished++
					continue
				}
				if err != nil {
					if st.firstError == "" {
						st.firstError = err.Error()
					}
					st.errors[status.Code(err).String()]++
					continue
				}
				if t1.After(from) && !t1.After(until) {
					recordLatency(st.latencies, t1.Sub(t0))
					st.calls++
				}
			}
			st.countBound = true
		})
	}

	// The measured window: CPU times at its two ends.
	time.Sleep(time.Until(from))
	before, err := sampleCPU(spec.ServerPID, spec.Postmaster)
	if err != nil {
		return loadResult{}, err
	}
	natsBefore, err := processCPU(spec.NATSPID)
	if err != nil {
		return loadResult{}, err
	}
	time.Sleep(time.Until(until))
	after, err := sampleCPU(spec.ServerPID, spec.Postmaster)
	if err != nil {
		return loadResult{}, err
	}
	natsAfter, err := processCPU(spec.NATSPID)
	if err != nil {
		return loadResult{}, err
	}
	wg.Wait()

	res := loadResult{CPU: after.since(before), NATS: natsAfter - natsBefore, Errors: map[string]int64{}}
	all := newLatencies()
	for _, st := range stats {
		all.Merge(st.latencies)
		res.Calls += st.calls
		res.Unfinished += st.unfinished
		for code, n := range st.errors {
			res.Errors[code] += n
		}
		if res.FirstError == "" {
			res.FirstError = st.firstError
		}
		res.CountBound = res.CountBound || st.countBound
	}
	res.P50, res.P99 = time.Duration(all.ValueAtQuantile(50)), time.Duration(all.ValueAtQuantile(99))
	return res, nil
}

// dial opens n connections to addr and waits until each is ready.
func dial(addr string, n int) ([]*grpc.ClientConn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var conns []*grpc.ClientConn
	for range n {
		cc, err := grpc.NewClient("passthrough:///"+addr,
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.ForceCodecV2(rawCodec{})))
		if err != nil {
			return conns, err
		}
		conns = append(conns, cc)
		cc.Connect()
		for s := cc.GetState(); s != connectivity.Ready; s = cc.GetState() {
			if !cc.WaitForStateChange(ctx, s) {
				return conns, fmt.Errorf("connect to %s: %v", addr, s)
			}
		}
	}
	return conns, nil
}
