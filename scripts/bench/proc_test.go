package main

import (
	"context"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/agynio/users/internal/testing/testdb"
)

// burn spends d of CPU time, as getrusage counts it.
func burn(t *testing.T, d time.Duration) {
	t.Helper()
	cpu := func() time.Duration {
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			t.Fatal(err)
		}
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	for start := cpu(); cpu()-start < d; {
		for i := range 100_000 {
			_ = i * i
		}
	}
}

func TestSampleCPUAgreesWithGetrusage(t *testing.T) {
	before, err := sampleCPU(os.Getpid(), 0)
	if err != nil {
		t.Fatal(err)
	}
	burn(t, 300*time.Millisecond)
	after, err := sampleCPU(os.Getpid(), 0)
	if err != nil {
		t.Fatal(err)
	}
	used := after.since(before)
	// The same process seen two ways: /proc/<pid>/stat counts in ticks of
	// 10ms, getrusage in nanoseconds.
	if used.Self < 200*time.Millisecond || used.Server < used.Self-50*time.Millisecond || used.Server > used.Self+50*time.Millisecond {
		t.Errorf("this process used %v by getrusage and %v by /proc/<pid>/stat, want about 300ms both", used.Self, used.Server)
	}
	if used.Machine.Busy < used.Self-50*time.Millisecond || used.Machine.Total < used.Machine.Busy {
		t.Errorf("the machine was busy %v of %v, want at least this process's %v", used.Machine.Busy, used.Machine.Total, used.Self)
	}
}

func TestPostgresCPUCountsTheBackends(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, testdb.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var backend int
	if err := conn.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&backend); err != nil {
		t.Fatal(err)
	}
	postmaster := postmasterOf(backend)
	if postmaster == 0 {
		t.Skip("PostgreSQL's processes are not visible here")
	}
	before, err := sampleCPU(0, postmaster)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "SELECT count(*) FROM generate_series(1, 5000000)"); err != nil {
		t.Fatal(err)
	}
	after, err := sampleCPU(0, postmaster)
	if err != nil {
		t.Fatal(err)
	}
	if used := after.since(before).Postgres; used < 100*time.Millisecond {
		t.Errorf("PostgreSQL used %v on a query of 5 million rows, want its backend's time counted", used)
	}
	if after.Backends < 1 {
		t.Errorf("%d backends, want this test's connection among them", after.Backends)
	}
}

func TestPeakRSS(t *testing.T) {
	const size = 64 << 20
	b := make([]byte, size)
	for i := range b {
		b[i] = 1
	}
	peak, err := peakRSS(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if peak < size {
		t.Errorf("peak RSS %d MiB, want at least the %d MiB just touched", peak>>20, size>>20)
	}
	if memTotal() < peak {
		t.Errorf("memory %d bytes, less than this process's peak %d", memTotal(), peak)
	}
}
