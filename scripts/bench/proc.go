package main

import (
	"fmt"
	"math"
	"os"
	"runtime"
	"syscall"
	"time"

	"github.com/prometheus/procfs"
)

// What Linux accounts for the processes of a run, read through procfs:
// CPU time from /proc/<pid>/stat and /proc/stat, peak memory from
// /proc/<pid>/status.

// clockTick is the unit of the CPU times in /proc/<pid>/stat (USER_HZ).
// Linux fixes it at 100 on every architecture Go supports.
const clockTick = 10 * time.Millisecond

func ticks[T int | uint](n T) time.Duration { return time.Duration(n) * clockTick }

// cpuSample is CPU time used so far, read at one end of a measured window;
// the difference of two is the window's.
type cpuSample struct {
	Self     time.Duration // this process, all threads
	Server   time.Duration // the server under load, if any
	Postgres time.Duration // all of PostgreSQL's processes, if visible
	Machine  machineCPU
	// Backends is how many processes PostgreSQL has forked and not yet
	// reaped: their CPU time counts in Postgres.
	Backends int
}

// machineCPU is the machine's CPU time, all CPUs together.
type machineCPU struct {
	Busy  time.Duration // user, system, interrupts: work done here
	Total time.Duration // busy, idle, and time the hypervisor took away
}

// sampleCPU reads this process's CPU time, server's (unless 0),
// PostgreSQL's (unless postmaster is 0) and the machine's.
func sampleCPU(server, postmaster int) (cpuSample, error) {
	var s cpuSample
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return s, err
	}
	s.Self = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	var err error
	if s.Server, err = processCPU(server); err != nil {
		return s, fmt.Errorf("server CPU: %w", err)
	}
	if postmaster != 0 {
		if s.Postgres, s.Backends, err = postgresCPU(postmaster); err != nil {
			return s, fmt.Errorf("PostgreSQL CPU: %w", err)
		}
	}
	fs, err := procfs.NewDefaultFS()
	if err != nil {
		return s, err
	}
	stat, err := fs.Stat()
	if err != nil {
		return s, err
	}
	c := stat.CPUTotal // in seconds
	busy := c.User + c.Nice + c.System + c.IRQ + c.SoftIRQ
	s.Machine = machineCPU{Busy: seconds(busy), Total: seconds(busy + c.Idle + c.Iowait + c.Steal)}
	return s, nil
}

// since is the CPU time used between before and s.
func (s cpuSample) since(before cpuSample) cpuSample {
	return cpuSample{
		Self:     s.Self - before.Self,
		Server:   s.Server - before.Server,
		Postgres: s.Postgres - before.Postgres,
		Machine:  machineCPU{Busy: s.Machine.Busy - before.Machine.Busy, Total: s.Machine.Total - before.Machine.Total},
		Backends: s.Backends,
	}
}

// busyShare is how busy the machine's CPUs were, from 0 to 1.
func (m machineCPU) busyShare() float64 {
	if m.Total <= 0 {
		return 0
	}
	return float64(m.Busy) / float64(m.Total)
}

// procfs gives /proc/stat's ticks as float seconds; rounded to the tick,
// so that a total is never a nanosecond short of its busy part (939.999999
// against 940 ms failed a test once).
func seconds(s float64) time.Duration {
	return time.Duration(math.Round(s/clockTick.Seconds())) * clockTick
}

// processCPU is the CPU time process pid has used so far, or 0 if pid is
// 0.
func processCPU(pid int) (time.Duration, error) {
	if pid == 0 {
		return 0, nil
	}
	st, err := procStat(pid)
	if err != nil {
		return 0, err
	}
	return ticks(st.UTime + st.STime), nil
}

// PostgreSQL runs a process per connection, forked from the postmaster.
// The CPU of the whole server is the postmaster's own, its live children's,
// and its exited children's (which the kernel adds to the postmaster's
// cutime and cstime once it has reaped them). It also returns how many
// children are alive.
func postgresCPU(postmaster int) (total time.Duration, children int, err error) {
	pm, err := procStat(postmaster)
	if err != nil {
		return 0, 0, err
	}
	total = ticks(pm.UTime+pm.STime) + ticks(pm.CUTime+pm.CSTime)
	procs, err := procfs.AllProcs()
	if err != nil {
		return 0, 0, err
	}
	for _, p := range procs {
		st, err := p.Stat()
		if err != nil || st.PPID != postmaster {
			continue // gone since the listing, or not a child
		}
		total += ticks(st.UTime + st.STime)
		children++
	}
	return total, children, nil
}

// postmasterOf returns the postmaster of the PostgreSQL backend process
// pid, or 0 if that process is not visible here as a postgres child of a
// postgres (a server in a container has PIDs of its own).
func postmasterOf(pid int) int {
	backend, err := procStat(pid)
	if err != nil || backend.Comm != "postgres" {
		return 0
	}
	parent, err := procStat(backend.PPID)
	if err != nil || parent.Comm != "postgres" {
		return 0
	}
	return backend.PPID
}

func procStat(pid int) (procfs.ProcStat, error) {
	p, err := procfs.NewProc(pid)
	if err != nil {
		return procfs.ProcStat{}, err
	}
	return p.Stat()
}

// peakRSS returns the process's peak resident set size (VmHWM) in bytes.
func peakRSS(pid int) (int64, error) {
	p, err := procfs.NewProc(pid)
	if err != nil {
		return 0, err
	}
	st, err := p.NewStatus()
	return int64(st.VmHWM), err
}

// resetPeakRSS starts the process's VmHWM afresh from its current RSS, so
// that the next peakRSS is the peak of what follows alone.
func resetPeakRSS(pid int) error {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
}

// memTotal returns the machine's memory in bytes, or 0 if unknown.
func memTotal() int64 {
	fs, err := procfs.NewDefaultFS()
	if err != nil {
		return 0
	}
	m, err := fs.Meminfo()
	if err != nil || m.MemTotalBytes == nil {
		return 0
	}
	return int64(*m.MemTotalBytes)
}

// cpuModel is the processor's name from /proc/cpuinfo, if it says.
func cpuModel() string {
	if fs, err := procfs.NewDefaultFS(); err == nil {
		if cpus, err := fs.CPUInfo(); err == nil && len(cpus) > 0 && cpus[0].ModelName != "" {
			return cpus[0].ModelName
		}
	}
	return runtime.GOARCH
}
