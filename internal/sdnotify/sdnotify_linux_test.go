package sdnotify_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/forkline/forkline/internal/sdnotify"
	"github.com/forkline/forkline/internal/sdnotify/sdtest"
	"github.com/forkline/forkline/internal/sockfd"
)

// watchdog bounds every wait; it fails a test, it never synchronises one.
const watchdog = 30 * time.Second

// notifier returns a Notifier for m, closed when the test ends.
func notifier(t *testing.T, m *sdtest.Manager) *sdnotify.Notifier {
	t.Helper()
	t.Setenv("NOTIFY_SOCKET", m.Socket())
	n, err := sdnotify.FromEnv()
	if err != nil || n == nil {
		t.Fatalf("FromEnv() = %v, %v", n, err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

func TestNotify(t *testing.T) {
	for name, newManager := range map[string]func(testing.TB) *sdtest.Manager{"path": sdtest.New, "abstract": sdtest.NewAbstract} {
		t.Run(name, func(t *testing.T) {
			m := newManager(t)
			n := notifier(t, m)
			ctx, cancel := context.WithTimeout(t.Context(), watchdog)
			defer cancel()
			for _, tc := range []struct {
				name string
				send func() error
				want []string
			}{
				{"Ready", n.Ready, []string{"READY=1"}},
				{"Stopping", n.Stopping, []string{"STOPPING=1"}},
				{"Status", func() error { return n.Status("serving: 4 workers") }, []string{"STATUS=serving: 4 workers"}},
				{"ExtendTimeout", func() error { return n.ExtendTimeout(1500 * time.Millisecond) }, []string{"EXTEND_TIMEOUT_USEC=1500000"}},
				{"Watchdog", n.Watchdog, []string{"WATCHDOG=1"}},
				{"Send", func() error { return n.Send("A=1", "B=2") }, []string{"A=1", "B=2"}},
				{"RemoveFDs", func() error { return n.RemoveFDs("http") }, []string{"FDSTOREREMOVE=1", "FDNAME=http"}},
			} {
				if err := tc.send(); err != nil {
					t.Fatalf("%s: %v", tc.name, err)
				}
				msg, err := m.Next(ctx)
				if err != nil {
					t.Fatalf("%s: %v", tc.name, err)
				}
				if !slices.Equal(msg.Lines, tc.want) || msg.PID != os.Getpid() || msg.FDs != nil {
					t.Errorf("%s: got %q from pid %d with FDs %v; want %q from %d, no FDs", tc.name, msg.Lines, msg.PID, msg.FDs, tc.want, os.Getpid())
				}
			}

			before := monotonicUsec(t)
			if err := n.Reloading(); err != nil {
				t.Fatal(err)
			}
			after := monotonicUsec(t)
			msg := m.Wait(ctx, "RELOADING=1")
			v, _ := msg.Value("MONOTONIC_USEC")
			usec, err := strconv.ParseInt(v, 10, 64)
			if len(msg.Lines) != 2 || msg.Lines[0] != "RELOADING=1" || err != nil || usec < before || usec > after || msg.PID != os.Getpid() {
				t.Errorf("Reloading: got %q from pid %d; want RELOADING=1, MONOTONIC_USEC in [%d, %d] from %d", msg.Lines, msg.PID, before, after, os.Getpid())
			}
		})
	}
}

func monotonicUsec(t *testing.T) int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		t.Fatal(err)
	}
	return ts.Nano() / 1e3
}

func TestClose(t *testing.T) {
	n := notifier(t, sdtest.New(t))
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := n.Ready(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Ready after Close = %v; want net.ErrClosed", err)
	}
}

// With nobody listening, a send fails and says so.
func TestNoManager(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "nobody"))
	n, err := sdnotify.FromEnv()
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if err := n.Ready(); !errors.Is(err, unix.ENOENT) {
		t.Errorf("Ready without a manager = %v; want ENOENT", err)
	}
}

// A manager that does not read makes sends fail after a short wait rather
// than block the caller.
func TestSendTimeout(t *testing.T) {
	addr := filepath.Join(t.TempDir(), "notify")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	t.Setenv("NOTIFY_SOCKET", addr)
	n, err := sdnotify.FromEnv()
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	for i := range 100_000 {
		start := time.Now()
		err := n.Watchdog()
		if err == nil {
			continue
		}
		d := time.Since(start)
		t.Logf("send %d failed after %v: %v", i, d, err)
		if !errors.Is(err, unix.EAGAIN) || d > 5*time.Second {
			t.Errorf("send to a full queue: %v after %v; want EAGAIN after about 100ms", err, d)
		}
		return
	}
	t.Fatal("100000 sends to a socket nobody reads all succeeded")
}

func TestStoreFDs(t *testing.T) {
	m := sdtest.New(t)
	n := notifier(t, m)
	ctx, cancel := context.WithTimeout(t.Context(), watchdog)
	defer cancel()

	var ls [3]net.Listener
	for i := range ls {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		ls[i] = l
	}
	store := func(name string, ls ...net.Listener) {
		t.Helper()
		var fds []int
		for _, l := range ls {
			fd, err := sockfd.DupFD(l.(*net.TCPListener))
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(fd)
			fds = append(fds, fd)
		}
		if err := n.StoreFDs(name, fds...); err != nil {
			t.Fatal(err)
		}
		msg := m.Wait(ctx, "FDSTORE=1")
		if want := []string{"FDSTORE=1", "FDNAME=" + name}; !slices.Equal(msg.Lines, want) || msg.PID != os.Getpid() || len(msg.FDs) != len(ls) {
			t.Errorf("got %q from pid %d with %d FDs; want %q from %d with %d", msg.Lines, msg.PID, len(msg.FDs), want, os.Getpid(), len(ls))
		}
	}
	store("http", ls[0], ls[1])
	store("http", ls[1]) // already stored: the manager ignores it
	store("admin", ls[2])

	st := m.Stored()
	if len(st) != 2 || len(st["http"]) != 2 || len(st["admin"]) != 1 {
		t.Fatalf("stored %v; want 2 under http, 1 under admin", st)
	}
	var stored []net.Listener
	for _, fd := range slices.Concat(st["http"], st["admin"]) {
		f := os.NewFile(uintptr(fd), "stored")
		l, err := net.FileListener(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		stored = append(stored, l)
	}
	// Close ours: a connection accepted through the stored copy shows that
	// it is the same socket, and live.
	for i, l := range ls {
		l.Close()
		if got := acceptOne(t, l.Addr().String(), stored[i]); got != "hello" {
			t.Errorf("listener %d: read %q through the stored copy; want hello", i, got)
		}
	}

	if err := n.RemoveFDs("http"); err != nil {
		t.Fatal(err)
	}
	m.Wait(ctx, "FDSTOREREMOVE=1")
	st = m.Stored()
	if len(st) != 1 || len(st["admin"]) != 1 {
		t.Errorf("after FDSTOREREMOVE of http, stored %v; want 1 under admin", st)
	}
	for _, fd := range st["admin"] {
		unix.Close(fd)
	}
}

// acceptOne dials addr, writes "hello", and returns what l's accepted
// connection reads.
func acceptOne(t *testing.T, addr string, l net.Listener) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, watchdog)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).CloseWrite()
	l.(*net.TCPListener).SetDeadline(time.Now().Add(watchdog))
	s, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	b, err := io.ReadAll(s)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// gorace spares a helper built with -race the race detector's one second
// pause at exit.
func gorace() string {
	return "GORACE=" + os.Getenv("GORACE") + " atexit_sleep_ms=0"
}

// report is what the listeners helper prints.
type report struct {
	Files []sdnotify.File
	Err   string
	Left  []string // LISTEN_* variables still set after Listeners
	Probe []probe  // descriptors 3, 4, ... after Listeners
}

type probe struct {
	CloseOnExec, Listening bool
	Addr                   string
}

func init() { registerHelper("listeners", listenersHelper) }

// listenersHelper calls Listeners and prints a report. With
// SDNOTIFY_TEST_SELF it first sets LISTEN_PID to its own pid, which its
// parent cannot know; SDNOTIFY_TEST_PROBE says how many descriptors from 3
// to describe; with SDNOTIFY_TEST_ACCEPT it accepts a connection on the
// first file and writes the file's name to it.
func listenersHelper() int {
	if os.Getenv("SDNOTIFY_TEST_SELF") != "" {
		os.Setenv("LISTEN_PID", strconv.Itoa(os.Getpid()))
	}
	files, err := sdnotify.Listeners()
	var r report
	r.Files = files
	if err != nil {
		r.Err = err.Error()
	}
	for _, k := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		if _, ok := os.LookupEnv(k); ok {
			r.Left = append(r.Left, k)
		}
	}
	nprobe, _ := strconv.Atoi(os.Getenv("SDNOTIFY_TEST_PROBE"))
	for fd := 3; fd < 3+nprobe; fd++ {
		var p probe
		flags, _ := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
		p.CloseOnExec = flags&unix.FD_CLOEXEC != 0
		acc, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
		p.Listening = acc == 1
		if sa, err := unix.Getsockname(fd); err == nil {
			if in, ok := sa.(*unix.SockaddrInet4); ok {
				p.Addr = net.JoinHostPort(net.IP(in.Addr[:]).String(), strconv.Itoa(in.Port))
			}
		}
		r.Probe = append(r.Probe, p)
	}
	if os.Getenv("SDNOTIFY_TEST_ACCEPT") != "" && len(files) > 0 {
		f := os.NewFile(uintptr(files[0].FD), files[0].Name)
		l, err := net.FileListener(f)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		c, err := l.Accept()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		c.Write([]byte(files[0].Name))
		c.Close()
	}
	if err := json.NewEncoder(os.Stdout).Encode(r); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

func decodeReport(t *testing.T, out []byte) report {
	t.Helper()
	var r report
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("helper's report %q: %v", out, err)
	}
	return r
}

// TestListeners runs the test binary as a child with two listening sockets
// at descriptors 3 and 4 and socket activation's variables.
func TestListeners(t *testing.T) {
	var files []*os.File
	var addrs []string
	for range 2 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		f, err := l.(*net.TCPListener).File()
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		files = append(files, f)
		addrs = append(addrs, l.Addr().String())
	}
	listening := func(cloexec bool) []probe {
		return []probe{{cloexec, true, addrs[0]}, {cloexec, true, addrs[1]}}
	}
	for _, tc := range []struct {
		name  string
		env   []string
		files []sdnotify.File
		err   string // a substring of the error; "" for none
		probe []probe
	}{
		{
			name:  "named",
			env:   []string{"SDNOTIFY_TEST_SELF=1", "LISTEN_FDS=2", "LISTEN_FDNAMES=http:admin"},
			files: []sdnotify.File{{FD: 3, Name: "http"}, {FD: 4, Name: "admin"}},
			probe: listening(true),
		},
		{
			name:  "unnamed",
			env:   []string{"SDNOTIFY_TEST_SELF=1", "LISTEN_FDS=2"},
			files: []sdnotify.File{{FD: 3, Name: "unknown"}, {FD: 4, Name: "unknown"}},
			probe: listening(true),
		},
		{
			name:  "one of two",
			env:   []string{"SDNOTIFY_TEST_SELF=1", "LISTEN_FDS=1", "LISTEN_FDNAMES=http"},
			files: []sdnotify.File{{FD: 3, Name: "http"}},
			probe: []probe{{true, true, addrs[0]}, {false, true, addrs[1]}},
		},
		{
			name:  "not ours",
			env:   []string{"LISTEN_PID=" + strconv.Itoa(os.Getpid()), "LISTEN_FDS=2", "LISTEN_FDNAMES=http:admin"},
			probe: listening(false),
		},
		{
			name:  "names mismatch",
			env:   []string{"SDNOTIFY_TEST_SELF=1", "LISTEN_FDS=2", "LISTEN_FDNAMES=http"},
			err:   `LISTEN_FDNAMES="http" names 1 descriptors, LISTEN_FDS=2`,
			probe: listening(false),
		},
		{
			name: "more than passed",
			env:  []string{"SDNOTIFY_TEST_SELF=1", "LISTEN_FDS=100000"},
			err:  "LISTEN_FDS=100000: descriptor",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), watchdog)
			defer cancel()
			cmd := exec.CommandContext(ctx, os.Args[0])
			cmd.Env = append(sdnotify.CleanEnv(os.Environ()), helperEnv+"=listeners", "SDNOTIFY_TEST_PROBE="+strconv.Itoa(len(tc.probe)), gorace())
			cmd.Env = append(cmd.Env, tc.env...)
			cmd.ExtraFiles = files
			cmd.Stderr = os.Stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("helper: %v", err)
			}
			r := decodeReport(t, out)
			if !slices.Equal(r.Files, tc.files) || !strings.Contains(r.Err, tc.err) || (tc.err == "") != (r.Err == "") {
				t.Errorf("Listeners() = %v, %q; want %v, error with %q", r.Files, r.Err, tc.files, tc.err)
			}
			if !slices.Equal(r.Probe, tc.probe) {
				t.Errorf("descriptors after Listeners: %+v; want %+v", r.Probe, tc.probe)
			}
			if r.Left != nil {
				t.Errorf("after Listeners, %v still set", r.Left)
			}
		})
	}
}

// TestSocketActivate has systemd-socket-activate start the test binary
// with a socket it listens on, as systemd would for a .socket unit, then
// connects through it.
func TestSocketActivate(t *testing.T) {
	var bin string
	for _, p := range []string{"/usr/bin/systemd-socket-activate", "/lib/systemd/systemd-socket-activate"} {
		if _, err := os.Stat(p); err == nil {
			bin = p
			break
		}
	}
	if bin == "" {
		t.Skip("no systemd-socket-activate")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// It needs a port of its own: take a free one. Another process could
	// take it in between; that fails the test, it does not hang it.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()

	ctx, cancel := context.WithTimeout(t.Context(), watchdog)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-l", addr, "--fdname=http",
		"-E", helperEnv+"=listeners", "-E", "SDNOTIFY_TEST_ACCEPT=1", "-E", "SDNOTIFY_TEST_PROBE=1", "-E", gorace(), exe)
	var stdout strings.Builder
	cmd.Stdout = &stdout
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	// It says when it listens; it starts the program at the first
	// connection.
	sc := bufio.NewScanner(stderr)
	var log []string
	for sc.Scan() && !strings.HasPrefix(sc.Text(), "Listening on") {
		log = append(log, sc.Text())
	}
	if sc.Err() != nil || !strings.HasPrefix(sc.Text(), "Listening on") {
		t.Fatalf("systemd-socket-activate did not say it listens: %v, %q", sc.Err(), log)
	}
	c, err := net.DialTimeout("tcp", addr, watchdog)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(watchdog))
	name, err := io.ReadAll(c)
	if err != nil || string(name) != "http" {
		t.Errorf("read %q, %v through the activated socket; want http", name, err)
	}
	rest, _ := io.ReadAll(stderr)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("systemd-socket-activate: %v\n%s", err, rest)
	}
	r := decodeReport(t, []byte(stdout.String()))
	if want := []sdnotify.File{{FD: 3, Name: "http"}}; !slices.Equal(r.Files, want) || r.Err != "" || r.Left != nil {
		t.Errorf("Listeners() = %v, %q, left %v; want %v, no error, none left", r.Files, r.Err, r.Left, want)
	}
	if want := []probe{{true, true, addr}}; !slices.Equal(r.Probe, want) {
		t.Errorf("descriptor 3: %+v; want %+v", r.Probe, want)
	}
}
