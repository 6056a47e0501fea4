//go:build unix

package control

import (
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// listen creates a listening unix socket at path with mode perm, in the
// order that keeps the file from ever being reachable with a wider mode:
// socket, (Linux) fchmod, bind, chmod, listen. net.ListenUnix binds and
// listens in one call, so the socket is made here and handed to package
// net afterwards.
func listen(path string, perm os.FileMode) (*net.UnixListener, error) {
	if !peerCredSupported {
		return nil, errNoPeerCred
	}
	if err := removeStale(path); err != nil {
		return nil, err
	}
	fail := func(call string, err error) (*net.UnixListener, error) {
		return nil, &net.OpError{Op: "listen", Net: "unix", Addr: &net.UnixAddr{Name: path, Net: "unix"}, Err: os.NewSyscallError(call, err)}
	}
	// Without SOCK_CLOEXEC everywhere (macOS), as package net does: no
	// fork between socket and close-on-exec.
	syscall.ForkLock.RLock()
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err == nil {
		unix.CloseOnExec(fd)
	}
	syscall.ForkLock.RUnlock()
	if err != nil {
		return fail("socket", err)
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close() // FileListener keeps a duplicate
	// On Linux bind gives the file the mode of the socket's inode (less
	// the umask), which fchmod sets; other systems refuse fchmod on a
	// socket, and there the chmod below is the one that counts.
	if runtime.GOOS == "linux" {
		if err := unix.Fchmod(fd, uint32(perm)); err != nil {
			return fail("fchmod", err)
		}
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		return fail("bind", err)
	}
	if err := os.Chmod(path, perm); err != nil { // exactly perm, whatever the umask
		os.Remove(path)
		return nil, fmt.Errorf("control: %w", err)
	}
	if err := unix.Listen(fd, 128); err != nil {
		os.Remove(path)
		return fail("listen", err)
	}
	ln, err := net.FileListener(f)
	if err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("control: %w", err)
	}
	ul := ln.(*net.UnixListener)
	ul.SetUnlinkOnClose(true)
	return ul, nil
}

// removeStale removes a socket file at path that nothing listens on, and
// refuses one that is served or a file that is not a socket.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("control: %w", err)
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("control: listen unix %s: the file exists and is not a socket", path)
	}
	c, err := net.Dial("unix", path)
	if err == nil {
		c.Close()
		return fmt.Errorf("control: listen unix %s: something serves it already", path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("control: cannot tell whether %s is served: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("control: %w", err)
	}
	return nil
}

// parseSignal reads kill's signal: a name with or without "SIG", in any
// case, or a number; empty is SIGTERM.
func parseSignal(s string) (syscall.Signal, error) {
	if s == "" {
		return unix.SIGTERM, nil
	}
	if n, err := strconv.Atoi(s); err == nil {
		if sig := syscall.Signal(n); n > 0 && unix.SignalName(sig) != "" {
			return sig, nil
		}
		return 0, fmt.Errorf("unknown signal %q", s)
	}
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	if sig := unix.SignalNum(name); sig != 0 {
		return sig, nil
	}
	return 0, fmt.Errorf("unknown signal %q", s)
}
