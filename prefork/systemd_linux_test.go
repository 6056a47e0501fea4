package prefork_test

import (
	"bufio"
	"context"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/forkline/forkline/internal/sdnotify/sdtest"
	"github.com/forkline/forkline/reuseport"
)

// notes is what a cluster told the fake manager, in order, without the
// watchdog's pings, the timeout extensions and the STATUS-only updates
// (counted apart).
type notes struct {
	t       *testing.T
	m       *sdtest.Manager
	pings   int
	extends int
	status  []string
}

// next returns the next message that says more than WATCHDOG=1 or STATUS=.
func (n *notes) next(ctx context.Context) sdtest.Message {
	n.t.Helper()
	for {
		msg, err := n.m.Next(ctx)
		if err != nil {
			n.t.Fatal(err)
		}
		if st, ok := msg.Value("STATUS"); ok {
			n.status = append(n.status, st)
		}
		switch {
		case slices.Equal(msg.Lines, []string{"WATCHDOG=1"}):
			n.pings++
		case len(msg.Lines) == 1 && strings.HasPrefix(msg.Lines[0], "EXTEND_TIMEOUT_USEC="):
			n.extends++
		case len(msg.Lines) == 1 && strings.HasPrefix(msg.Lines[0], "STATUS="):
		default:
			return msg
		}
	}
}

// expect checks that the next message's first line is first, and that it
// came from pid.
func (n *notes) expect(ctx context.Context, pid int, first string) sdtest.Message {
	n.t.Helper()
	msg := n.next(ctx)
	if len(msg.Lines) == 0 || msg.Lines[0] != first || msg.PID != pid {
		n.t.Fatalf("from pid %d: %q, want %s from the parent (pid %d)", msg.PID, msg.Lines, first, pid)
	}
	return msg
}

// TestNotifySequence: a cluster under a service manager says READY=1 once
// every worker serves; each reload RELOADING=1 with MONOTONIC_USEC, then
// READY=1 whether it served or failed; STOPPING=1 at a stop; STATUS= as it
// goes; WATCHDOG=1 all along when WATCHDOG_USEC asks for it. Only the
// parent speaks.
func TestNotifySequence(t *testing.T) {
	t.Parallel()
	m := sdtest.New(t)
	n := &notes{t: t, m: m}
	env := append(m.Env(), "WATCHDOG_USEC=200000")
	c := startHelper(t, helperSpec{env: env}, "-workers", "2", "-fail-from-gen", "3")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	ready := n.expect(ctx, c.pid, "READY=1")
	if st, _ := ready.Value("STATUS"); st != "gen 1: 2/2 ready" {
		t.Errorf("ready: STATUS=%q", st)
	}
	c.ready()

	c.signal(syscall.SIGHUP) // gen 2 serves
	rel := n.expect(ctx, c.pid, "RELOADING=1")
	usec, ok := rel.Value("MONOTONIC_USEC")
	if v, err := strconv.ParseInt(usec, 10, 64); !ok || err != nil || v <= 0 {
		t.Errorf("RELOADING=1 without a MONOTONIC_USEC: %q", rel.Lines)
	}
	if st, _ := n.expect(ctx, c.pid, "READY=1").Value("STATUS"); !strings.HasPrefix(st, "gen 2: ") {
		t.Errorf("after the reload: STATUS=%q", st)
	}

	c.signal(syscall.SIGHUP) // gen 3 fails: gen 2 serves on
	n.expect(ctx, c.pid, "RELOADING=1")
	if st, _ := n.expect(ctx, c.pid, "READY=1").Value("STATUS"); !strings.HasPrefix(st, "gen 2: ") {
		t.Errorf("after the failed reload: STATUS=%q", st)
	}

	// The watchdog is pinged every 100 ms (half of WATCHDOG_USEC).
	for n.pings < 3 {
		msg, err := m.Next(ctx)
		if err != nil {
			t.Fatalf("after %d pings: %v", n.pings, err)
		}
		if slices.Equal(msg.Lines, []string{"WATCHDOG=1"}) {
			n.pings++
		}
	}

	c.signal(syscall.SIGTERM)
	if st, _ := n.expect(ctx, c.pid, "STOPPING=1").Value("STATUS"); !strings.HasSuffix(st, ", stopping") {
		t.Errorf("stopping: STATUS=%q", st)
	}
	if code := c.wait(30 * time.Second); code != 0 {
		t.Errorf("exit status %d", code)
	}
	t.Logf("STATUS lines: %q; watchdog pings: %d, timeout extensions: %d", n.status, n.pings, n.extends)
}

// listenerFile is a listening TCP socket on addr as an *os.File (the
// caller's), with SO_REUSEPORT when reusePort.
func listenerFile(t *testing.T, addr string, reusePort bool) *os.File {
	t.Helper()
	var ln net.Listener
	var err error
	if reusePort {
		ln, err = reuseport.Listen(context.Background(), "tcp", addr)
	} else {
		ln, err = net.Listen("tcp", addr)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// activated wraps a helper so that LISTEN_PID is its own pid, as a
// service manager sets it after fork: sh sets it to $$ and execs the
// helper in the same process.
var activated = []string{"sh", "-c", `LISTEN_PID=$$ exec "$0" "$@"`}

// TestSocketActivation: a cluster started with sockets adopts them instead
// of binding. Several sockets on one address (a socket unit with
// ReusePort=true) are as many slots, whatever Workers says; one socket
// without SO_REUSEPORT is shared by every worker (inherit mode for it).
func TestSocketActivation(t *testing.T) {
	t.Parallel()
	t.Run("several", func(t *testing.T) {
		t.Parallel()
		first := listenerFile(t, "127.0.0.1:0", true)
		ln, err := net.FileListener(first)
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		files := []*os.File{first, listenerFile(t, addr, true), listenerFile(t, addr, true)}
		c := startHelper(t, helperSpec{wrap: activated, files: files,
			env: []string{"LISTEN_FDS=3", "LISTEN_FDNAMES=web.socket:web.socket:web.socket"}},
			"-workers", "2", "-addr", addr)
		got, pids := c.ready()
		if got != addr || len(pids) != 3 {
			t.Fatalf("served %s by %v, want %s by 3 workers", got, pids, addr)
		}
		if len(c.logged(func(r logRecord) bool { return r.str("msg") == "adopting an inherited socket" })) != 3 {
			t.Errorf("not 3 sockets adopted:\n%s", c.output())
		}
		seen := map[int]bool{}
		for range 200 {
			seen[mustGet(t, addr).pid] = true
			if len(seen) == 3 {
				break
			}
		}
		if len(seen) != 3 {
			t.Errorf("200 requests reached %d of the 3 workers", len(seen))
		}
		c.stopAndCheck()
	})
	t.Run("one", func(t *testing.T) {
		t.Parallel()
		f := listenerFile(t, "127.0.0.1:0", false)
		ln, err := net.FileListener(f)
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		c := startHelper(t, helperSpec{wrap: activated, files: []*os.File{f},
			env: []string{"LISTEN_FDS=1", "LISTEN_FDNAMES=http"}}, "-workers", "2", "-addr", addr)
		got, pids := c.ready()
		if got != addr || len(pids) != 2 {
			t.Fatalf("served %s by %v, want %s by 2 workers", got, pids, addr)
		}
		if len(c.logged(func(r logRecord) bool { return strings.Contains(r.str("msg"), "every worker shares it") })) != 1 {
			t.Errorf("the shared socket is not logged:\n%s", c.output())
		}
		c.stopAndCheck()
	})
}

// TestFDStoreRestart: under a manager with an fd store, the parent stores
// every slot's socket; SIGKILLed and started again with them, as
// Restart=always does, it adopts them: a client that dials without pause
// all along sees no refused and no reset connection.
func TestFDStoreRestart(t *testing.T) {
	t.Parallel()
	m := sdtest.New(t)
	env := append(m.Env(), "FDSTORE=8")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	first := startHelper(t, helperSpec{env: env}, "-workers", "2")
	m.Wait(ctx, "READY=1")
	addr, _ := first.ready()
	stored := m.Stored()
	if len(stored["main.1"]) != 1 || len(stored["main.2"]) != 1 {
		t.Fatalf("fd store: %v, want main.1 and main.2", stored)
	}
	steered := first.logged(func(r logRecord) bool { return strings.HasPrefix(r.str("msg"), "steering new connections") }) != nil
	if n := len(stored["main.steer"]); steered && n != 4 {
		t.Fatalf("fd store: %d descriptors of the steering group, want 4", n)
	}
	// Everything stored comes back, as systemd passes it: by name.
	var files []*os.File
	var names []string
	for name, fds := range stored {
		for _, fd := range fds {
			f := os.NewFile(uintptr(fd), name)
			t.Cleanup(func() { f.Close() })
			files, names = append(files, f), append(names, name)
		}
	}

	l := startLoad(addr, 4, false)
	l.awaitOK(t, 50, 20*time.Second)
	if err := syscall.Kill(first.pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	first.waitGone(20 * time.Second)
	ok := func() int { n, _ := l.counts(); return n }
	atKill := ok()

	second := startHelper(t, helperSpec{wrap: activated, files: files,
		env: append(env, "LISTEN_FDS="+strconv.Itoa(len(files)), "LISTEN_FDNAMES="+strings.Join(names, ":"))}, "-workers", "2")
	if got, _ := second.ready(); got != addr {
		t.Fatalf("the restarted parent serves %s, not %s", got, addr)
	}
	if steered && second.logged(func(r logRecord) bool { return r.str("msg") == "adopting the stored steering program" }) == nil {
		t.Errorf("the restarted parent did not adopt the steering program:\n%s", second.output())
	}
	l.awaitOK(t, atKill+200, 30*time.Second)
	l.finish()
	if f := l.failed(); len(f) > 0 {
		t.Errorf("%d requests failed across the restart: %v", len(f), l.errors())
	}
	t.Logf("%s; %d answered after the kill", l.summary(), ok()-atKill)
	second.stopAndCheck()
}

// TestSystemdSocketActivate: under systemd's own systemd-socket-activate
// (which listens, and execs the program at the first connection with
// LISTEN_FDS=1 and LISTEN_PID set), the cluster serves that socket: the
// connection that woke it is answered, and both workers serve.
func TestSystemdSocketActivate(t *testing.T) {
	t.Parallel()
	ssa, err := exec.LookPath("systemd-socket-activate")
	if err != nil {
		t.Skip("no systemd-socket-activate here")
	}
	probe, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := probe.Addr().String()
	probe.Close()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// It passes no environment but what -E names, and no descriptor but
	// the sockets: the parent logs to stderr.
	cmd := exec.Command(ssa, "-l", addr, "--fdname=main", "-E", useHelper("hello"), exe, "-addr", addr, "-workers", "2")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var out strings.Builder
	exited := make(chan struct{}) // closed once cmd is reaped, waitErr set
	var waitErr error
	listening := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			mu.Lock()
			out.WriteString(sc.Text() + "\n")
			mu.Unlock()
			if strings.HasPrefix(sc.Text(), "Listening on ") {
				close(listening)
			}
		}
		waitErr = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // a watchdog: the test stops it first
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			t.Error("the cluster's stderr is still open 20 s after SIGKILL")
		}
		if t.Failed() {
			mu.Lock()
			t.Logf("output:\n%s", out.String())
			mu.Unlock()
		}
	})
	select {
	case <-listening:
	case <-time.After(20 * time.Second):
		t.Fatal("systemd-socket-activate does not listen")
	}
	// The first connection starts the program; it waits in the queue.
	pids := map[int]bool{}
	for i := 0; len(pids) < 2; i++ {
		if i == 200 {
			t.Fatalf("200 requests reached %d worker(s)", len(pids))
		}
		a, err := get(addr, "/", 20*time.Second)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		pids[a.pid] = true
	}
	if err := syscall.Kill(cmd.Process.Pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
		if waitErr != nil {
			t.Errorf("after SIGTERM: %v", waitErr)
		}
	case <-time.After(20 * time.Second):
		t.Error("no exit 20 s after SIGTERM")
	}
}
