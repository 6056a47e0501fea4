//go:build unix && !aix

package sockfd

import (
	"fmt"
	"net"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// minFD keeps duplicates off descriptors 0, 1 and 2. A process started with
// stdio closed would otherwise get its socket as "stderr", and the runtime
// writes panics to fd 2.
const minFD = 3

// Dup returns a new descriptor for the same socket as c, as an [*os.File]
// owned by the caller, who must close it. The duplicate has FD_CLOEXEC set,
// so a child inherits it only when it is passed explicitly, as in os/exec's
// Cmd.ExtraFiles. It never lands on descriptors 0 to 2. It shares the open
// file description with c, and so its O_NONBLOCK flag: c stays
// non-blocking, and neither the file's Fd method nor os/exec changes that.
//
// The file is named after c's addresses, "tcp:127.0.0.1:8080" for a
// listener and "tcp:127.0.0.1:8080->127.0.0.1:51234" for a connection, so
// that errors and logs say which socket it is.
//
// Errors are those of c.SyscallConn and of its Control (for example when c
// is closed), or an [*os.SyscallError] for the fcntl. Dup is safe to call
// concurrently with other methods of c.
func Dup(c syscall.Conn) (*os.File, error) {
	fd, err := DupFD(c)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), name(c, fd)), nil
}

// DupFD is Dup without the *os.File: the raw descriptor, owned by the
// caller. A process that must not watch the socket (a parent that keeps a
// listener only for its children) holds it this way: an *os.File of a
// non-blocking socket registers it with the runtime's poller, which would
// then wake for every connection.
func DupFD(c syscall.Conn) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return -1, fmt.Errorf("sockfd: %w", err)
	}
	fd := -1
	var dupErr error
	err = rc.Control(func(sysfd uintptr) {
		fd, dupErr = unix.FcntlInt(sysfd, unix.F_DUPFD_CLOEXEC, minFD)
	})
	if err != nil {
		return -1, fmt.Errorf("sockfd: %w", err)
	}
	if dupErr != nil {
		return -1, fmt.Errorf("sockfd: %w", os.NewSyscallError("fcntl", dupErr))
	}
	return fd, nil
}

// name describes c for the returned file's Name.
func name(c syscall.Conn, fd int) string {
	switch c := c.(type) {
	case net.Listener:
		if a := c.Addr(); a != nil {
			return a.Network() + ":" + a.String()
		}
	case net.Conn:
		if l, r := c.LocalAddr(), c.RemoteAddr(); l != nil && r != nil {
			return l.Network() + ":" + l.String() + "->" + r.String()
		} else if l != nil {
			return l.Network() + ":" + l.String()
		}
	case *os.File:
		return c.Name()
	}
	return fmt.Sprintf("sockfd:%d", fd)
}
