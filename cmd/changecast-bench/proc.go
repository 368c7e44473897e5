package main

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
)

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat times: 100 on every
// Linux architecture Go supports.
const clockTicks = 100

// statFields returns the fields of /proc/<pid>/stat after the command name
// (fields[0] is the state, field 3 in proc(5)).
func statFields(pid int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil
	}
	s := string(b)
	end := strings.LastIndexByte(s, ')')
	if end < 0 || end+2 > len(s) {
		return nil
	}
	return strings.Fields(s[end+2:])
}

// procCPU returns the CPU seconds (user + system) pid has used, plus those
// of its reaped children when withChildren.
func procCPU(pid int, withChildren bool) float64 {
	f := statFields(pid)
	if len(f) < 15 {
		return 0
	}
	last := 12 // stime
	if withChildren {
		last = 14 // cstime
	}
	var ticks int64
	for i := 11; i <= last; i++ {
		n, _ := strconv.ParseInt(f[i], 10, 64)
		ticks += n
	}
	return float64(ticks) / clockTicks
}

// childPIDs returns the pids of pid's live children.
func childPIDs(pid int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	want := strconv.Itoa(pid)
	var out []int
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if f := statFields(p); len(f) > 1 && f[1] == want {
			out = append(out, p)
		}
	}
	return out
}

// vmRSS returns pid's resident set size in bytes (VmRSS).
func vmRSS(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("parse VmRSS %q: %w", v, err)
			}
			return kb * 1024, nil
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// selfCPU returns the CPU seconds the harness itself has used.
func selfCPU() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

// systemCPU returns the CPU seconds every process on the machine has used
// (busy time in /proc/stat: everything but idle and iowait).
func systemCPU() float64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	first, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(first)
	if len(f) < 8 || f[0] != "cpu" {
		return 0
	}
	var busy int64
	for i, v := range f[1:] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		if i >= 8 { // guest times are already counted in user
			break
		}
		n, _ := strconv.ParseInt(v, 10, 64)
		busy += n
	}
	return float64(busy) / clockTicks
}

// loadAverage returns the 1-minute load average, -1 if unknown.
func loadAverage() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return -1
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return -1
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return -1
	}
	return v
}

// machineInfo describes the machine for the report.
func machineInfo() []string {
	out := []string{fmt.Sprintf("cores (nproc): %d", runtime.NumCPU())}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				out = append(out, "CPU: "+strings.TrimSpace(v))
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		first, _, _ := strings.Cut(string(b), "\n")
		if v, ok := strings.CutPrefix(first, "MemTotal:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			out = append(out, fmt.Sprintf("memory: %.1f GiB", float64(kb)/(1<<20)))
		}
	}
	var u syscall.Utsname
	if syscall.Uname(&u) == nil {
		out = append(out, "kernel: "+utsString(u.Sysname[:])+" "+utsString(u.Release[:]))
	}
	out = append(out, "harness Go: "+runtime.Version())
	return out
}

func utsString(b []int8) string {
	var s strings.Builder
	for _, c := range b {
		if c == 0 {
			break
		}
		s.WriteByte(byte(c))
	}
	return s.String()
}

// reapOrphans stops the PostgreSQL servers and removes the directories of
// earlier runs whose harness died without cleaning up (SIGKILL, power
// loss), found by the owner pid each run writes. Live runs are left alone.
func reapOrphans(workDir string) {
	dirs, _ := filepath.Glob(filepath.Join(workDir, tempPrefix+"*"))
	for _, dir := range dirs {
		b, err := os.ReadFile(filepath.Join(dir, ownerFile))
		if err != nil {
			continue
		}
		owner, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || owner <= 0 || syscall.Kill(owner, 0) == nil {
			continue
		}
		if pidText, err := os.ReadFile(filepath.Join(dir, "pg", "pgdata", "postmaster.pid")); err == nil {
			first, _, _ := strings.Cut(string(pidText), "\n")
			if pid, err := strconv.Atoi(strings.TrimSpace(first)); err == nil && pid > 0 {
				// SIGQUIT: immediate shutdown; the cluster is thrown away.
				_ = syscall.Kill(pid, syscall.SIGQUIT)
				if !waitGone(pid) {
					continue
				}
			}
		}
		os.RemoveAll(dir)
	}
}
