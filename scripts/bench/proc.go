package main

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTick is the unit of the CPU times in /proc/<pid>/stat (USER_HZ).
// Linux fixes it at 100 on every architecture Go supports; reading
// sysconf(_SC_CLK_TCK) would need cgo.
const clockTick = 10 * time.Millisecond

// processCPU returns the user plus system CPU time process pid has used.
func processCPU(pid int) (time.Duration, error) {
	f, err := statFields(pid)
	if err != nil {
		return 0, err
	}
	return ticks(f, 11, 12) // utime stime
}

// peakRSS returns the process's peak resident set size (VmHWM) in bytes.
func peakRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no VmHWM", pid)
}

// resetPeakRSS starts the process's VmHWM afresh from its current RSS, so
// that the next peakRSS is the peak of what follows alone.
func resetPeakRSS(pid int) error {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
}

// selfCPU returns the CPU time this process has used, all threads.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// windowCPU is the CPU times read at either end of a measured run.
type windowCPU struct {
	loadgen, server, postgres time.Duration
	machine                   cpuTimes
	children                  int // PostgreSQL's processes
}

// cpuTimes is the machine's CPU time since boot, all CPUs together.
type cpuTimes struct {
	Busy  time.Duration // user, system, interrupts: work done here
	Total time.Duration // busy, idle, and time the hypervisor took away
}

// machineCPU reads the machine's CPU time from /proc/stat.
func machineCPU() (cpuTimes, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuTimes{}, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal ...
	if len(f) < 9 || f[0] != "cpu" {
		return cpuTimes{}, fmt.Errorf("/proc/stat: unexpected format")
	}
	var v [8]int64
	for i := range v {
		if v[i], err = strconv.ParseInt(f[i+1], 10, 64); err != nil {
			return cpuTimes{}, fmt.Errorf("/proc/stat: %w", err)
		}
	}
	user, nice, system, idle, iowait, irq, softirq, steal := v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]
	busy := user + nice + system + irq + softirq
	return cpuTimes{Busy: time.Duration(busy) * clockTick, Total: time.Duration(busy+idle+iowait+steal) * clockTick}, nil
}

func (t cpuTimes) sub(u cpuTimes) cpuTimes {
	return cpuTimes{Busy: t.Busy - u.Busy, Total: t.Total - u.Total}
}

func (t cpuTimes) busyShare() float64 {
	if t.Total <= 0 {
		return 0
	}
	return float64(t.Busy) / float64(t.Total)
}

// statFields returns the fields of /proc/<pid>/stat after the command
// name: fields[0] is the state (field 3), fields[1] the parent (field 4).
func statFields(pid int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	// The command name, in parentheses, may hold spaces: count fields
	// from the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 15 {
		return nil, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	return f, nil
}

// ticks sums the given fields of a stat line, as CPU time.
func ticks(f []string, idx ...int) (time.Duration, error) {
	var sum int64
	for _, i := range idx {
		v, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil {
			return 0, err
		}
		sum += v
	}
	return time.Duration(sum) * clockTick, nil
}

// PostgreSQL runs a process per connection, forked from the postmaster.
// The CPU of the whole server is the postmaster's own, its live children's,
// and its exited children's (which the kernel adds to the postmaster's
// cutime and cstime once it has reaped them). It also returns how many
// children are alive.
func postgresCPU(postmaster int) (total time.Duration, children int, err error) {
	f, err := statFields(postmaster)
	if err != nil {
		return 0, 0, err
	}
	total, err = ticks(f, 11, 12, 13, 14) // utime stime cutime cstime
	if err != nil {
		return 0, 0, err
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, 0, err
	}
	parent := strconv.Itoa(postmaster)
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == postmaster {
			continue
		}
		f, err := statFields(pid)
		if err != nil || f[1] != parent {
			continue // not a child, or gone since the listing
		}
		t, err := ticks(f, 11, 12)
		if err != nil {
			return 0, 0, err
		}
		total += t
		children++
	}
	return total, children, nil
}

// postmasterOf returns the postmaster of the PostgreSQL backend process
// pid, or 0 if that process is not visible here as a postgres child of a
// postgres (a server in a container has PIDs of its own).
func postmasterOf(pid int) int {
	f, err := statFields(pid)
	if err != nil {
		return 0
	}
	parent, err := strconv.Atoi(f[1])
	if err != nil {
		return 0
	}
	for _, p := range []int{pid, parent} {
		comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", p))
		if err != nil || strings.TrimSpace(string(comm)) != "postgres" {
			return 0
		}
	}
	return parent
}
