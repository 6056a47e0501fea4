package reuseport_test

import (
	"context"
	"errors"
	"net"
	"os"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/forkline/forkline/reuseport"
)

func TestSupportedOnLinux(t *testing.T) {
	if !reuseport.Supported() {
		t.Fatal("Supported() = false on Linux")
	}
	if !reuseport.Supported() { // cached, and still true
		t.Fatal("Supported() changed")
	}
}

func getsockopt(t *testing.T, c syscall.Conn, opt int) int {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var (
		v    int
		gerr error
	)
	if err := rc.Control(func(fd uintptr) { v, gerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, opt) }); err != nil {
		t.Fatal(err)
	}
	if gerr != nil {
		t.Fatal(gerr)
	}
	return v
}

// TestControlComposes runs the caller's Control and then reuseport's, and
// checks that both took effect on the socket.
func TestControlComposes(t *testing.T) {
	var userRan bool
	lc := net.ListenConfig{
		Control: func(network, address string, c syscall.RawConn) error {
			var err error
			if cerr := c.Control(func(fd uintptr) {
				err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1)
			}); cerr != nil {
				return cerr
			}
			if err != nil {
				return os.NewSyscallError("setsockopt", err)
			}
			userRan = true
			return reuseport.Control(network, address, c)
		},
	}
	ln, err := lc.Listen(context.Background(), "tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	tl := ln.(*net.TCPListener)
	if !userRan {
		t.Error("the user's Control did not run")
	}
	for _, opt := range []struct {
		name string
		opt  int
	}{
		{"SO_KEEPALIVE", unix.SO_KEEPALIVE},
		{"SO_REUSEADDR", unix.SO_REUSEADDR},
		{"SO_REUSEPORT", unix.SO_REUSEPORT},
	} {
		if v := getsockopt(t, tl, opt.opt); v == 0 {
			t.Errorf("%s is off", opt.name)
		}
	}
}

// TestControlReturnsErrors feeds Control a descriptor that is not a socket:
// setsockopt fails with ENOTSOCK, which must come back named and wrapped.
func TestControlReturnsErrors(t *testing.T) {
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	err = reuseport.Control("tcp", "127.0.0.1:0", rc)
	if !errors.Is(err, unix.ENOTSOCK) {
		t.Fatalf("Control on %s = %v, want ENOTSOCK", os.DevNull, err)
	}
	var se *os.SyscallError
	if !errors.As(err, &se) || se.Syscall != "setsockopt" {
		t.Errorf("Control error %q is not a setsockopt *os.SyscallError", err)
	}
	if errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("Control error %q claims ErrUnsupported", err)
	}
}
