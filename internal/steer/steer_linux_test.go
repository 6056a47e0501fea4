package steer

import (
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// newGroup loads the program, or skips the test where it cannot be.
func newGroup(t *testing.T) *Group {
	t.Helper()
	g, err := New()
	if errors.Is(err, ErrPermission) || errors.Is(err, ErrUnsupported) {
		t.Skipf("no steering here: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	return g
}

// listener is one reuseport socket of the test's group, with its raw fd.
type listener struct {
	*net.TCPListener
	fd int
}

func listen(t *testing.T, addr string) listener {
	t.Helper()
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var err error
		c.Control(func(fd uintptr) { err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1) })
		return err
	}}
	lc.SetMultipathTCP(false)
	l, err := lc.Listen(context.Background(), "tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	tl := l.(*net.TCPListener)
	rc, _ := tl.SyscallConn()
	var fd int
	rc.Control(func(f uintptr) { fd = int(f) })
	return listener{tl, fd}
}

// spread dials n connections and counts, once the kernel has queued them
// all, how many each listener's queue holds.
func spread(t *testing.T, addr string, n int, ls ...listener) []int {
	t.Helper()
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range n {
		c, err := net.DialTimeout("tcp4", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	counts := make([]int, len(ls))
	for i, l := range ls {
		counts[i] = acceptAll(t, l)
	}
	return counts
}

// acceptAll accepts what is queued on l, without waiting for more.
func acceptAll(t *testing.T, l listener) int {
	t.Helper()
	n := 0
	for {
		l.SetDeadline(time.Now().Add(20 * time.Millisecond)) // the queue is full already: this only ends the loop
		c, err := l.Accept()
		if err != nil {
			return n
		}
		c.Close()
		n++
	}
}

// steeredPair makes a group of two sockets, a at index 0 and b at 1,
// with the program attached.
func steeredPair(t *testing.T) (g *Group, a, b listener, addr string) {
	t.Helper()
	g = newGroup(t)
	a = listen(t, "127.0.0.1:0")
	addr = a.Addr().String()
	b = listen(t, addr)
	for i, l := range []listener{a, b} {
		if err := g.Add(i, l.fd); err != nil {
			t.Fatal(err)
		}
	}
	if err := g.Attach(a.fd); err != nil {
		t.Fatal(err)
	}
	return g, a, b, addr
}

func TestSelection(t *testing.T) {
	g, a, b, addr := steeredPair(t)
	foreign := listen(t, addr) // joins the group; never listed
	for _, tc := range []struct {
		eligible []int
		check    func(got []int) bool
	}{
		{[]int{0}, func(got []int) bool { return got[0] == 200 && got[1] == 0 && got[2] == 0 }},
		{[]int{1}, func(got []int) bool { return got[0] == 0 && got[1] == 200 && got[2] == 0 }},
		{[]int{0, 1}, func(got []int) bool { return got[0] > 50 && got[1] > 50 && got[2] == 0 }},
	} {
		if err := g.SetEligible(tc.eligible); err != nil {
			t.Fatal(err)
		}
		got := spread(t, addr, 200, a, b, foreign)
		t.Logf("eligible %v: a %d, b %d, foreign %d", tc.eligible, got[0], got[1], got[2])
		if !tc.check(got) {
			t.Errorf("eligible %v: a %d, b %d, foreign %d", tc.eligible, got[0], got[1], got[2])
		}
	}
	// No eligible slot: the kernel's own hash, foreign socket included.
	if err := g.SetEligible(nil); err != nil {
		t.Fatal(err)
	}
	if got := spread(t, addr, 300, a, b, foreign); got[0] == 0 || got[1] == 0 || got[2] == 0 {
		t.Errorf("with no eligible slot the hash should reach every socket: %v", got)
	}
}

// A socket that closes with connections queued hands them to an eligible
// socket, whatever net.ipv4.tcp_migrate_req says (it is 0 on most hosts).
func TestCloseMigrates(t *testing.T) {
	g, a, b, addr := steeredPair(t)
	if err := g.SetEligible([]int{0}); err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range 100 {
		c, err := net.DialTimeout("tcp4", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	if err := g.SetEligible([]int{1}); err != nil { // a out, then it closes
		t.Fatal(err)
	}
	a.Close()
	if got := acceptAll(t, b); got != 100 {
		t.Errorf("b accepted %d of the 100 connections queued on a when it closed, want all", got)
	}
	t.Logf("tcp_migrate_req=%s", sysctl("net/ipv4/tcp_migrate_req"))
}

func sysctl(name string) string {
	v, err := os.ReadFile("/proc/sys/" + name)
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(v))
}
