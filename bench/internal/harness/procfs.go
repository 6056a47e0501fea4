package harness

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// userHZ is the unit of the times in /proc/<pid>/stat and /proc/stat: the
// kernel's USER_HZ, 100 on every Linux architecture Go runs on (what
// `getconf CLK_TCK` says).
const userHZ = 100

// statFields returns the fields of /proc/<path>/stat after the command name
// (which may hold spaces and parentheses): [0] is the state, [1] the ppid,
// [2] the process group, [11] utime, [12] stime, [19] the start time.
func statFields(path string) ([]string, error) {
	b, err := os.ReadFile(filepath.Join("/proc", path, "stat"))
	if err != nil {
		return nil, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil, fmt.Errorf("/proc/%s/stat: no command name", path)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return nil, fmt.Errorf("/proc/%s/stat: %d fields", path, len(f))
	}
	return f, nil
}

func ticks(f []string, i int) float64 {
	n, _ := strconv.ParseFloat(f[i], 64)
	return n
}

// CPUms is the CPU time (utime+stime) pid has used, in ms; 0 if it is gone.
func CPUms(pid int) float64 {
	f, err := statFields(strconv.Itoa(pid))
	if err != nil {
		return 0
	}
	return (ticks(f, 11) + ticks(f, 12)) * 1000 / userHZ
}

// CPUmsSum is CPUms summed over pids.
func CPUmsSum(pids []int) float64 {
	t := 0.0
	for _, p := range pids {
		t += CPUms(p)
	}
	return t
}

// CtxSwitches sums the voluntary and involuntary context switches of every
// thread of the processes (from /proc/<pid>/task/*/status).
func CtxSwitches(pids []int) (voluntary, involuntary int64) {
	for _, p := range pids {
		for _, t := range Threads(p) {
			voluntary += t.Voluntary
			involuntary += t.Involuntary
		}
	}
	return voluntary, involuntary
}

// Thread is one thread's counters.
type Thread struct {
	Pid, Tid                         int
	Voluntary, Involuntary, CPUTicks int64
}

// Threads returns the counters of every thread of pid, by thread id.
func Threads(pid int) []Thread {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	ents, _ := os.ReadDir(dir)
	var out []Thread
	for _, e := range ents {
		tid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := os.ReadFile(filepath.Join(dir, e.Name(), "status"))
		if err != nil {
			continue // the thread has just exited
		}
		t := Thread{Pid: pid, Tid: tid}
		t.Voluntary = statusField(st, "voluntary_ctxt_switches:")
		t.Involuntary = statusField(st, "nonvoluntary_ctxt_switches:")
		if f, err := statFields(fmt.Sprintf("%d/task/%d", pid, tid)); err == nil {
			t.CPUTicks = int64(ticks(f, 11) + ticks(f, 12))
		}
		out = append(out, t)
	}
	slices.SortFunc(out, func(a, b Thread) int { return a.Tid - b.Tid })
	return out
}

// Wchan is what thread tid of pid waits in ("0" or "" when running).
func Wchan(pid, tid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/wchan", pid, tid))
	return strings.TrimSpace(string(b))
}

// statusField is the number after key at the start of a line of a
// /proc status file.
func statusField(b []byte, key string) int64 {
	for line := range bytes.Lines(b) {
		if v, ok := bytes.CutPrefix(line, []byte(key)); ok {
			n, _ := strconv.ParseInt(string(bytes.TrimSpace(bytes.TrimSuffix(bytes.TrimSpace(v), []byte("kB")))), 10, 64)
			return n
		}
	}
	return 0
}

// RSSkB is pid's VmRSS in kB; 0 if it is gone.
func RSSkB(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	return float64(statusField(b, "VmRSS:"))
}

// BusyMS is the CPU time the whole machine has spent in user, nice, system
// and steal, in ms (irq and softirq time is accounted apart from processes,
// so it is left out on both sides of the "other processes" figure).
func BusyMS() float64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 9 || f[0] != "cpu" {
		return 0
	}
	return (ticks(f, 1) + ticks(f, 2) + ticks(f, 3) + ticks(f, 8)) * 1000 / userHZ
}

// OwnCPU is the CPU time this process and its reaped children (wrk, ss,
// ...) have used.
func OwnCPU() time.Duration {
	var self, kids syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &self)
	_ = syscall.Getrusage(syscall.RUSAGE_CHILDREN, &kids)
	return time.Duration(self.Utime.Nano() + self.Stime.Nano() + kids.Utime.Nano() + kids.Stime.Nano())
}

// LoadAvg is the 1, 5 and 15 minute load averages.
func LoadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	return strings.Join(f[:min(3, len(f))], " ")
}

// Proc is a process named by its pid and its start time, so that a pid the
// kernel has given to another process since is not taken for it.
type Proc struct {
	Pid   int
	start string
}

// Alive says whether that very process still runs (a zombie does not).
func (p Proc) Alive() bool {
	f, err := statFields(strconv.Itoa(p.Pid))
	return err == nil && f[0] != "Z" && f[0] != "X" && f[19] == p.start
}

// Kill sends sig to the process if it is still that process.
func (p Proc) Kill(sig syscall.Signal) {
	if p.Alive() {
		_ = syscall.Kill(p.Pid, sig)
	}
}

// Descendants returns every live descendant of pid: children, theirs, ...
func Descendants(pid int) []Proc {
	var out []Proc
	queue := []int{pid}
	for len(queue) > 0 && len(out) < 10000 {
		kids, _ := Children(queue[0])
		queue = queue[1:]
		for _, k := range kids {
			if f, err := statFields(strconv.Itoa(k)); err == nil {
				out = append(out, Proc{Pid: k, start: f[19]})
				queue = append(queue, k)
			}
		}
	}
	return out
}

// Children returns the live (not zombie) children of pid, sorted. It reads
// /proc/<pid>/task/*/children, which lists each thread's children, and
// scans /proc where the kernel does not provide that file.
func Children(pid int) ([]int, error) {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return nil, err
	}
	var kids []int
	for _, task := range tasks {
		dir := filepath.Join("/proc", strconv.Itoa(pid), "task", task.Name())
		b, err := os.ReadFile(filepath.Join(dir, "children"))
		if errors.Is(err, fs.ErrNotExist) {
			if _, serr := os.Stat(dir); serr == nil {
				return scanChildren(pid) // the thread is there, the file is not
			}
			continue // the thread has just exited
		}
		if err != nil {
			return nil, err
		}
		for _, f := range strings.Fields(string(b)) {
			if k, err := strconv.Atoi(f); err == nil && IsChild(k, pid) {
				kids = append(kids, k)
			}
		}
	}
	slices.Sort(kids)
	return slices.Compact(kids), nil
}

func scanChildren(pid int) ([]int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var kids []int
	for _, e := range ents {
		if k, err := strconv.Atoi(e.Name()); err == nil && IsChild(k, pid) {
			kids = append(kids, k)
		}
	}
	slices.Sort(kids)
	return kids, nil
}

// IsChild says whether pid is a live, not zombie, child of parent.
func IsChild(pid, parent int) bool {
	f, err := statFields(strconv.Itoa(pid))
	return err == nil && f[0] != "Z" && f[0] != "X" && f[1] == strconv.Itoa(parent)
}

// GroupAlive says whether process group pgid has a member that is not a
// zombie. kill(-pgid, 0) answers for zombies too, so a yes from it is
// checked against /proc.
func GroupAlive(pgid int) bool {
	if syscall.Kill(-pgid, 0) != nil {
		return false
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return true
	}
	g := strconv.Itoa(pgid)
	for _, e := range ents {
		if e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		if f, err := statFields(e.Name()); err == nil && f[2] == g && f[0] != "Z" && f[0] != "X" {
			return true
		}
	}
	return false
}
