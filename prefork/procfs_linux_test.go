package prefork_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// What the kernel says about processes and sockets, from /proc: the tests'
// and the helpers' view of what the cluster left behind.

// procTCP is one socket of /proc/net/tcp{,6}.
type procTCP struct {
	localPort int
	listen    bool
	rxQueue   int // for a listening socket: its accept queue
	inode     string
}

// procNetTCP reads this network namespace's TCP sockets.
func procNetTCP() ([]procTCP, error) {
	var out []procTCP
	for _, file := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		data, err := os.ReadFile(file)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		for _, line := range strings.Split(string(data), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) < 10 {
				continue
			}
			local := f[1]
			port, _ := strconv.ParseInt(local[strings.LastIndex(local, ":")+1:], 16, 32)
			_, rxHex, _ := strings.Cut(f[4], ":")
			rx, _ := strconv.ParseInt(rxHex, 16, 64)
			out = append(out, procTCP{localPort: int(port), listen: f[3] == "0A", rxQueue: int(rx), inode: f[9]})
		}
	}
	return out, nil
}

func mustNetTCP(t *testing.T) []procTCP {
	t.Helper()
	socks, err := procNetTCP()
	if err != nil {
		t.Fatal(err)
	}
	return socks
}

// listenQueues returns the accept-queue length of every listening TCP
// socket on port: the kernel's own count.
func listenQueues(t *testing.T, port int) []int {
	t.Helper()
	var queues []int
	for _, s := range mustNetTCP(t) {
		if s.listen && s.localPort == port {
			queues = append(queues, s.rxQueue)
		}
	}
	return queues
}

// socketInodes returns the inodes of the sockets process pid holds open.
func socketInodes(pid int) (map[string]bool, error) {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	inodes := make(map[string]bool)
	for _, e := range ents {
		link, err := os.Readlink(filepath.Join(dir, e.Name()))
		if ino, ok := strings.CutPrefix(link, "socket:["); err == nil && ok {
			inodes[strings.TrimSuffix(ino, "]")] = true
		}
	}
	return inodes, nil
}

// heldBy counts the TCP connections on local port (in any state but
// LISTEN) that process pid holds open.
func heldBy(pid, port int) (int, error) {
	socks, err := procNetTCP()
	if err != nil {
		return 0, err
	}
	mine, err := socketInodes(pid)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, s := range socks {
		if !s.listen && s.localPort == port && mine[s.inode] {
			n++
		}
	}
	return n, nil
}

func connectionsHeldBy(t *testing.T, pid, port int) int {
	t.Helper()
	n, err := heldBy(pid, port)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// waitProcessGone waits, by pidfd, until process pid is gone (exited,
// reaped or not), and reports whether it went within timeout.
func waitProcessGone(t *testing.T, pid int, timeout time.Duration) bool {
	t.Helper()
	fd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, unix.ESRCH) {
		return true
	}
	if err != nil {
		t.Fatalf("pidfd_open %d: %v", pid, err)
	}
	defer unix.Close(fd)
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	deadline := time.Now().Add(timeout)
	for {
		ms := int(time.Until(deadline).Milliseconds())
		if ms <= 0 {
			return false
		}
		n, err := unix.Poll(fds, ms)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		return n > 0
	}
}

// openFDs returns what each open descriptor of process pid refers to.
func openFDs(t *testing.T, pid int) map[int]string {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	fds := make(map[int]string)
	for _, e := range ents {
		fd, _ := strconv.Atoi(e.Name())
		link, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			continue // closed meanwhile
		}
		fds[fd] = link
	}
	return fds
}

// fdKinds counts descriptors by kind ("socket", "pipe", "anon_inode:[pidfd]", a path).
func fdKinds(fds map[int]string) map[string]int {
	kinds := make(map[string]int)
	for _, link := range fds {
		kind, _, _ := strings.Cut(link, ":[")
		if strings.HasPrefix(link, "anon_inode:") {
			kind = link
		}
		kinds[kind]++
	}
	return kinds
}

// procEntry is one process, as /proc/<pid>/stat shows it.
type procEntry struct {
	PID   int    `json:"pid"`
	PPID  int    `json:"ppid"`
	State string `json:"state"` // "Z": a zombie (<defunct>)
	Comm  string `json:"comm"`
}

// procStat reads /proc/<pid>/stat; ok is false if the process is gone.
func procStat(pid int) (p procEntry, ok bool) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return p, false
	}
	// pid (comm) state ppid ...; comm may hold spaces and parentheses.
	open, end := bytes.IndexByte(stat, '('), bytes.LastIndexByte(stat, ')')
	if open < 0 || end < open {
		return p, false
	}
	f := strings.Fields(string(stat[end+1:]))
	if len(f) < 2 {
		return p, false
	}
	p.PID = pid
	p.Comm = string(stat[open+1 : end])
	p.State = f[0]
	p.PPID, _ = strconv.Atoi(f[1])
	return p, true
}

// processes returns every process this process can see, by pid.
func processes() []procEntry {
	ents, _ := os.ReadDir("/proc")
	var ps []procEntry
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			if p, ok := procStat(pid); ok {
				ps = append(ps, p)
			}
		}
	}
	return ps
}

// childrenOf returns the pids of ppid's child processes, sorted, and those
// of them that are zombies. It reads /proc/<ppid>/task/*/children where the
// kernel has them (CONFIG_PROC_CHILDREN), and every process's stat where
// it does not.
func childrenOf(t *testing.T, ppid int) (kids, zombies []int) {
	t.Helper()
	files, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", ppid))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) > 0 {
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				continue // the thread is gone
			}
			for _, field := range strings.Fields(string(data)) {
				pid, _ := strconv.Atoi(field)
				kids = append(kids, pid)
			}
		}
	} else {
		for _, p := range processes() {
			if p.PPID == ppid {
				kids = append(kids, p.PID)
			}
		}
	}
	slices.Sort(kids)
	kids = slices.Compact(kids)
	for _, pid := range kids {
		if p, ok := procStat(pid); ok && p.State == "Z" {
			zombies = append(zombies, pid)
		}
	}
	return kids, zombies
}
