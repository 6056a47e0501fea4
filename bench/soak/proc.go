package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// fdKinds counts pid's open descriptors by kind: socket, pipe,
// anon_inode:[pidfd], a path's directory, and so on.
func fdKinds(pid int) (int, map[string]int, error) {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, nil, err
	}
	kinds := map[string]int{}
	for _, e := range ents {
		link, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			continue // closed while we looked
		}
		kinds[fdKind(link)]++
	}
	n := 0
	for _, c := range kinds {
		n += c
	}
	return n, kinds, nil
}

func fdKind(link string) string {
	switch {
	case strings.HasPrefix(link, "socket:"):
		return "socket"
	case strings.HasPrefix(link, "pipe:"):
		return "pipe"
	case strings.HasPrefix(link, "anon_inode:"):
		return link
	case strings.HasPrefix(link, "/"):
		return "file:" + link
	}
	return "other"
}

// formatKinds prints kinds sorted by name: "pipe=2 socket=5".
func formatKinds(kinds map[string]int) string {
	names := make([]string, 0, len(kinds))
	for k := range kinds {
		names = append(names, k)
	}
	sort.Strings(names)
	var b strings.Builder
	for i, k := range names {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%d", k, kinds[k])
	}
	return b.String()
}

// threads reads the Threads: line of /proc/<pid>/status.
func threads(pid int) (int, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "Threads:"); ok {
			return strconv.Atoi(strings.TrimSpace(v))
		}
	}
	return 0, errors.New("no Threads line")
}

// statFields returns the fields of /proc/<path>/stat after the command
// name: [0] is the state, [1] the parent pid.
func statFields(path string) ([]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil, fmt.Errorf("%s: no ')'", path)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 2 {
		return nil, fmt.Errorf("%s: short", path)
	}
	return f, nil
}

// parentOf returns pid's parent pid.
func parentOf(pid int) (int, error) {
	f, err := statFields(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(f[1])
}

// allStopped reports whether every thread of pid is in group stop (T).
func allStopped(pid int) bool {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", pid))
	if err != nil || len(tasks) == 0 {
		return false
	}
	for _, t := range tasks {
		f, err := statFields(t)
		if err != nil || f[0] != "T" {
			return false
		}
	}
	return true
}

// procsRunning lists the live (not zombie) processes whose executable is
// bin: every process of ours runs the hello binary we built.
func procsRunning(bin string) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if err != nil || exe != bin {
			continue
		}
		if f, err := statFields(fmt.Sprintf("/proc/%d/stat", pid)); err == nil && f[0] != "Z" && f[0] != "X" {
			pids = append(pids, pid)
		}
	}
	return pids
}

// pidfd is a process handle that cannot be confused with a later process
// given the same pid.
type pidfd struct {
	pid, fd int
}

// openChild opens pid and checks that parent is its parent: only a worker
// of the cluster we started is ever signalled.
func openChild(pid, parent int) (*pidfd, error) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	if pp, err := parentOf(pid); err != nil || pp != parent {
		unix.Close(fd)
		return nil, fmt.Errorf("pid %d is not a child of %d (parent %d, %v)", pid, parent, pp, err)
	}
	return &pidfd{pid: pid, fd: fd}, nil
}

func (p *pidfd) signal(sig unix.Signal) error {
	return unix.PidfdSendSignal(p.fd, sig, nil, 0)
}

func (p *pidfd) close() { unix.Close(p.fd) }

// waitGone waits until every process in ps has exited (its pidfd turns
// readable), or the watchdog fires; it returns those still running.
func waitGone(ps []*pidfd, watchdog time.Duration) []*pidfd {
	deadline := time.Now().Add(watchdog)
	left := ps
	for len(left) > 0 {
		ms := int(time.Until(deadline) / time.Millisecond)
		if ms <= 0 {
			break
		}
		fds := make([]unix.PollFd, len(left))
		for i, p := range left {
			fds[i] = unix.PollFd{Fd: int32(p.fd), Events: unix.POLLIN}
		}
		if _, err := unix.Poll(fds, ms); err != nil && err != unix.EINTR {
			break
		}
		var still []*pidfd
		for i, p := range left {
			if fds[i].Revents == 0 {
				still = append(still, p)
			}
		}
		left = still
	}
	return left
}

// pidfdOpenExe opens pid if it still runs bin (checked after the open, so
// the handle cannot belong to a later process with the same pid).
func pidfdOpenExe(pid int, bin string) (*pidfd, error) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, err
	}
	if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err != nil || exe != bin {
		unix.Close(fd)
		return nil, fmt.Errorf("pid %d does not run %s", pid, bin)
	}
	return &pidfd{pid: pid, fd: fd}, nil
}

// threadWaits counts pid's threads by where they wait (wchan), leaving
// out those running and the runtime's idle ones: Go parks an idle thread
// in a futex and never ends it, so only threads waiting anywhere else can
// be leaked work (a waitid on a worker that never exits, a blocked read).
func threadWaits(pid int) (idle int, busy map[string]int) {
	busy = map[string]int{}
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*", pid))
	for _, t := range tasks {
		w, err := os.ReadFile(t + "/wchan")
		name := strings.TrimSpace(string(w))
		switch {
		case err != nil:
			continue // gone
		case runtimeIdle(name):
			idle++
			continue
		case name == "" || name == "0":
			continue // on a CPU: not waiting at all
		}
		busy[name]++
	}
	return idle, busy
}

// runtimeIdle: where the Go runtime's own threads wait when there is
// nothing to do: an idle M (futex), the netpoller (epoll), sysmon (usleep).
func runtimeIdle(wchan string) bool {
	for _, p := range []string{"futex", "ep_poll", "do_epoll_wait", "hrtimer_nanosleep", "do_nanosleep"} {
		if strings.HasPrefix(wchan, p) {
			return true
		}
	}
	return false
}

func sameCounts(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
