package prefork_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// logRecord is one JSON log line of a helper cluster.
type logRecord struct {
	Msg    string `json:"msg"`
	Level  string `json:"level"`
	Worker int    `json:"worker"`
	PID    int    `json:"pid"`
	Gen    int    `json:"gen"`
	Addr   string `json:"addr"`
	Mode   string `json:"mode"`
	Err    string `json:"err"`
	Status string `json:"status"`
}

// testCluster is a helper cluster running in its own process group: the
// parent and its workers, all this test binary.
type testCluster struct {
	t       *testing.T
	cmd     *exec.Cmd
	records chan logRecord

	mu     sync.Mutex
	lines  []string // everything the cluster wrote to stderr
	stderr chan struct{}

	exited  chan struct{}
	exitErr error
}

// startCluster starts the "hello" helper with args. The cluster is killed
// (by its process group) when the test ends, if it is still running.
func startCluster(t *testing.T, args ...string) *testCluster {
	t.Helper()
	return startHelper(t, []string{envHelper + "=hello"}, args...)
}

func startHelper(t *testing.T, env []string, args ...string) *testCluster {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = w
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	c := &testCluster{
		t:       t,
		cmd:     cmd,
		records: make(chan logRecord, 1<<16),
		stderr:  make(chan struct{}),
		exited:  make(chan struct{}),
	}
	go func() {
		defer close(c.stderr)
		defer close(c.records)
		defer r.Close()
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			line := sc.Text()
			c.mu.Lock()
			c.lines = append(c.lines, line)
			c.mu.Unlock()
			var rec logRecord
			if json.Unmarshal([]byte(line), &rec) == nil {
				c.records <- rec
			}
		}
	}()
	go func() {
		c.exitErr = cmd.Wait()
		close(c.exited)
	}()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		for _, ch := range []chan struct{}{c.exited, c.stderr} {
			select {
			case <-ch:
			case <-time.After(10 * time.Second):
				t.Errorf("helper cluster %d did not go away", cmd.Process.Pid)
				return
			}
		}
		if t.Failed() {
			t.Logf("cluster output:\n%s", c.output())
		}
	})
	return c
}

func (c *testCluster) output() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.Join(c.lines, "\n")
}

// next returns the next log record that match accepts, or false if none
// comes within timeout. Unlike waitFor, a timeout is an answer here.
func (c *testCluster) next(timeout time.Duration, match func(logRecord) bool) (logRecord, bool) {
	c.t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		select {
		case rec, ok := <-c.records:
			if !ok {
				c.t.Fatal("cluster output ended")
			}
			if match(rec) {
				return rec, true
			}
		case <-deadline.C:
			return logRecord{}, false
		}
	}
}

// waitFor returns the first log record, from here on, that match accepts;
// the test fails if none comes within timeout.
func (c *testCluster) waitFor(timeout time.Duration, what string, match func(logRecord) bool) logRecord {
	c.t.Helper()
	rec, ok := c.next(timeout, match)
	if !ok {
		c.t.Fatalf("no %s within %v", what, timeout)
	}
	return rec
}

// ready waits for the cluster to be ready and returns its address and the
// pid of each worker by id.
func (c *testCluster) ready() (addr string, pids map[int]int) {
	c.t.Helper()
	pids = make(map[int]int)
	for {
		rec := c.waitFor(10*time.Second, "cluster ready", func(r logRecord) bool {
			return r.Msg == "listening" && r.Worker > 0 || r.Msg == "cluster ready"
		})
		if rec.Msg == "cluster ready" {
			return rec.Addr, pids
		}
		pids[rec.Worker] = rec.PID
	}
}

// signal sends sig to the parent.
func (c *testCluster) signal(sig syscall.Signal) {
	c.t.Helper()
	if err := c.cmd.Process.Signal(sig); err != nil {
		c.t.Fatal(err)
	}
}

// stopAndCheck stops the cluster with SIGTERM and checks that it exits 0
// (a data race found in the parent by the race detector would make it 66).
func (c *testCluster) stopAndCheck() {
	c.t.Helper()
	c.signal(syscall.SIGTERM)
	if code := c.wait(20 * time.Second); code != 0 {
		c.t.Errorf("parent exit code %d, want 0", code)
	}
}

// wait waits for the parent to exit and returns its exit code.
func (c *testCluster) wait(timeout time.Duration) int {
	c.t.Helper()
	select {
	case <-c.exited:
	case <-time.After(timeout):
		c.t.Fatalf("parent still running after %v", timeout)
	}
	var ee *exec.ExitError
	if errors.As(c.exitErr, &ee) {
		return ee.ExitCode()
	}
	if c.exitErr != nil {
		c.t.Fatal(c.exitErr)
	}
	return 0
}

// groupGone reports whether no process of the cluster's group is left.
func (c *testCluster) groupGone() bool {
	return errors.Is(syscall.Kill(-c.cmd.Process.Pid, 0), syscall.ESRCH)
}

// hello is a parsed answer of the hello helper.
type hello struct{ worker, pid, gen int }

// get sends one request on a fresh connection and parses the answer.
func get(addr, path string, timeout time.Duration) (hello, error) {
	var h hello
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return h, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n", path); err != nil {
		return h, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return h, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return h, err
	}
	if resp.StatusCode != http.StatusOK {
		return h, fmt.Errorf("status %s: %s", resp.Status, body)
	}
	return parseHello(string(body))
}

func parseHello(body string) (hello, error) {
	var h hello
	i := strings.Index(body, "from ")
	if i < 0 {
		return h, fmt.Errorf("unexpected body %q", body)
	}
	if _, err := fmt.Sscanf(body[i:], "from worker=%d pid=%d gen=%d", &h.worker, &h.pid, &h.gen); err != nil {
		return h, fmt.Errorf("unexpected body %q: %v", body, err)
	}
	return h, nil
}

// listenQueues returns the accept-queue length of every listening TCP socket
// on port, from /proc/net/tcp{,6}: the kernel's own count.
func listenQueues(t *testing.T, port int) []int {
	t.Helper()
	var queues []int
	for _, file := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		for _, f := range procNetTCP(t, file) {
			if f.state == 0x0A && f.localPort == port {
				queues = append(queues, f.rxQueue)
			}
		}
	}
	return queues
}

// connectionsHeldBy counts the accepted TCP connections on local port (in
// any state but LISTEN) that process pid holds open.
func connectionsHeldBy(t *testing.T, pid, port int) int {
	t.Helper()
	inodes := make(map[string]bool)
	for _, file := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		for _, f := range procNetTCP(t, file) {
			if f.state != 0x0A && f.localPort == port {
				inodes[f.inode] = true
			}
		}
	}
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		link, err := os.Readlink(dir + "/" + e.Name())
		if err != nil {
			continue
		}
		if strings.HasPrefix(link, "socket:[") && inodes[strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]")] {
			n++
		}
	}
	return n
}

type procTCP struct {
	localPort int
	state     int
	rxQueue   int
	inode     string
}

func procNetTCP(t *testing.T, file string) []procTCP {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		t.Fatal(err)
	}
	var out []procTCP
	for _, line := range strings.Split(string(data), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 10 {
			continue
		}
		local := f[1]
		port, _ := strconv.ParseInt(local[strings.LastIndex(local, ":")+1:], 16, 32)
		state, _ := strconv.ParseInt(f[3], 16, 32)
		queues := strings.Split(f[4], ":")
		rx, _ := strconv.ParseInt(queues[1], 16, 64)
		out = append(out, procTCP{localPort: int(port), state: int(state), rxQueue: int(rx), inode: f[9]})
	}
	return out
}

// waitProcessGone waits, by pidfd, until the process pid is gone (exited,
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

func portOf(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	port, _ := strconv.Atoi(p)
	return port
}

// lockedBuffer is a bytes.Buffer for concurrent writers: a parent's log,
// kept to look for a line.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
