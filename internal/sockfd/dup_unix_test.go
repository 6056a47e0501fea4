//go:build unix && !aix

package sockfd_test

import (
	"errors"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/forkline/forkline/internal/sockfd"
)

// watchdog bounds every blocking step; it fails the test, it never paces it.
const watchdog = 10 * time.Second

func listen(t *testing.T) *net.TCPListener {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.(*net.TCPListener)
}

// fcntl runs F_GETFL or F_GETFD on c's own descriptor.
func fcntl(t *testing.T, c syscall.Conn, cmd int) int {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var (
		flags int
		ferr  error
	)
	if err := rc.Control(func(fd uintptr) { flags, ferr = unix.FcntlInt(fd, cmd, 0) }); err != nil {
		t.Fatal(err)
	}
	if ferr != nil {
		t.Fatal(ferr)
	}
	return flags
}

func TestDupListener(t *testing.T) {
	ln := listen(t)
	if fcntl(t, ln, unix.F_GETFL)&unix.O_NONBLOCK == 0 {
		t.Fatal("listener is blocking before Dup")
	}

	f, err := sockfd.Dup(ln)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	// Fd is what os/exec calls for ExtraFiles; on a File() duplicate it
	// would switch the shared description to blocking.
	fd := f.Fd()
	if fd < 3 {
		t.Errorf("Dup returned fd %d, want >= 3", fd)
	}
	if fcntl(t, ln, unix.F_GETFL)&unix.O_NONBLOCK == 0 {
		t.Error("original listener is blocking after Dup and Fd")
	}
	fdflags, err := unix.FcntlInt(fd, unix.F_GETFD, 0)
	if err != nil {
		t.Fatal(err)
	}
	if fdflags&unix.FD_CLOEXEC == 0 {
		t.Error("duplicate lacks FD_CLOEXEC")
	}
	if want := "tcp:" + ln.Addr().String(); f.Name() != want {
		t.Errorf("Name() = %q, want %q", f.Name(), want)
	}

	fl, err := net.FileListener(f)
	if err != nil {
		t.Fatal(err)
	}
	defer fl.Close()
	if err := fl.(*net.TCPListener).SetDeadline(time.Now().Add(watchdog)); err != nil {
		t.Fatal(err)
	}
	client, err := net.DialTimeout("tcp4", ln.Addr().String(), watchdog)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	// Nothing accepts on ln, so the queued connection is fl's to take.
	server, err := fl.Accept()
	if err != nil {
		t.Fatalf("Accept on the duplicate: %v", err)
	}
	defer server.Close()
	if got, want := server.RemoteAddr().String(), client.LocalAddr().String(); got != want {
		t.Errorf("accepted %s, dialled from %s", got, want)
	}
}

func TestDupConn(t *testing.T) {
	ln := listen(t)
	client, err := net.DialTimeout("tcp4", ln.Addr().String(), watchdog)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()

	f, err := sockfd.Dup(client.(*net.TCPConn))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if want := "tcp:" + client.LocalAddr().String() + "->" + client.RemoteAddr().String(); f.Name() != want {
		t.Errorf("Name() = %q, want %q", f.Name(), want)
	}
}

func TestDupClosed(t *testing.T) {
	ln := listen(t)
	ln.Close()
	f, err := sockfd.Dup(ln)
	if err == nil {
		f.Close()
		t.Fatal("Dup of a closed listener succeeded")
	}
	if !errors.Is(err, net.ErrClosed) {
		t.Errorf("Dup of a closed listener: %v, want net.ErrClosed", err)
	}
}

func TestDupNotASocket(t *testing.T) {
	// Dup works on any descriptor; the name comes from the file.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	f, err := sockfd.Dup(r)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Name() != r.Name() {
		t.Errorf("Name() = %q, want %q", f.Name(), r.Name())
	}
}
