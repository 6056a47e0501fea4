//go:build unix

package supervisor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/forkline/forkline/internal/sockfd"
	"github.com/forkline/forkline/reuseport"
)

// probeFree fails when something listens on addr already: a listener
// without SO_REUSEPORT conflicts with any, a reuseport group of another
// process (same user) included, which the slots would otherwise join
// without a word. Go sets SO_REUSEADDR, so a restart's TIME_WAIT
// connections do not count. It listens for a moment on a port where nobody
// did.
func probeFree(network, addr string) error {
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	var c io.Closer
	var err error
	if strings.HasPrefix(network, "udp") {
		c, err = lc.ListenPacket(context.Background(), network, addr)
	} else {
		c, err = lc.Listen(context.Background(), network, addr)
	}
	if err == nil {
		return c.Close()
	}
	if errors.Is(err, unix.EADDRINUSE) {
		if _, p, _ := net.SplitHostPort(addr); p != "" {
			if port, _ := strconv.Atoi(p); port > 0 {
				if who := holder(network, port); who != "" {
					return fmt.Errorf("prefork: %w (held by %s)", err, who)
				}
			}
		}
	}
	return fmt.Errorf("prefork: %w", err)
}

// bind opens one socket on addr, listening (tcp, unix) or bound (udp),
// and returns the parent's raw descriptor of it and the address bound. The
// Go listener or conn goes at once: the parent's netpoller must not wake
// for every connection or datagram on a socket only workers read.
func bind(network, addr string, reusePort bool) (int, string, error) {
	// Plain TCP, not Multipath TCP (Go's default for listeners on Linux
	// since 1.24): a worker rebuilds the listener from a descriptor and
	// cannot know it is MPTCP, and every connection of an MPTCP listener
	// from an ordinary client is a fallback socket; measured here, a worker
	// served 15-20% fewer requests per second on one than on plain TCP.
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	if reusePort {
		lc.Control = reuseport.Control
	}
	var c syscall.Conn
	var bound net.Addr
	if strings.HasPrefix(network, "udp") {
		pc, err := lc.ListenPacket(context.Background(), network, addr)
		if err != nil {
			return -1, "", fmt.Errorf("prefork: %w", err)
		}
		defer pc.Close()
		c, bound = pc.(*net.UDPConn), pc.LocalAddr()
	} else {
		l, err := lc.Listen(context.Background(), network, addr)
		if err != nil {
			return -1, "", fmt.Errorf("prefork: %w", err)
		}
		if ul, ok := l.(*net.UnixListener); ok {
			ul.SetUnlinkOnClose(false) // the parent removes the path at stop
		}
		defer l.Close()
		c, bound = l.(syscall.Conn), l.Addr()
	}
	fd, err := sockfd.DupFD(c)
	if err != nil {
		return -1, "", fmt.Errorf("prefork: %w", err)
	}
	return fd, bound.String(), nil
}

func closeFD(fd int) { unix.Close(fd) }

// residentBytes reads a process's resident set size (Linux).
func residentBytes(pid int) (int64, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/statm")
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(data))
	if len(f) < 2 {
		return 0, fmt.Errorf("statm: %q", data)
	}
	pages, err := strconv.ParseInt(f[1], 10, 64)
	return pages * int64(os.Getpagesize()), err
}

// monotonicUsec is the MONOTONIC_USEC= assignment a reload's RELOADING=1
// carries: systemd's Type=notify-reload matches it to its own clock.
func monotonicUsec() string {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return "MONOTONIC_USEC=" + strconv.FormatInt(ts.Nano()/1000, 10)
}

// sockName is what a descriptor the parent was given is: "tcp", "udp" or
// "unix", and the address it is bound to (as net.Addr.String says it).
func sockName(fd int) (kind, addr string, err error) {
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return "", "", os.NewSyscallError("getsockopt", err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return "", "", os.NewSyscallError("getsockname", err)
	}
	stream := typ == unix.SOCK_STREAM
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		addr = net.JoinHostPort(net.IP(sa.Addr[:]).String(), strconv.Itoa(sa.Port))
	case *unix.SockaddrInet6:
		addr = net.JoinHostPort(net.IP(sa.Addr[:]).String(), strconv.Itoa(sa.Port))
	case *unix.SockaddrUnix:
		return "unix", sa.Name, nil
	default:
		return "", "", fmt.Errorf("a socket of family %T", sa)
	}
	if stream {
		return "tcp", addr, nil
	}
	return "udp", addr, nil
}

// canJoin reports whether this process may add a member to the SO_REUSEPORT
// group at addr: it binds one without listening (a bound socket takes no
// connection) and closes it. The kernel refuses when the group's sockets
// lack SO_REUSEPORT or belong to another user (systemd#28039).
func canJoin(network, addr string) bool {
	lc := net.ListenConfig{Control: func(network, address string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		})
		return errors.Join(err, serr)
	}}
	if strings.HasPrefix(network, "udp") {
		pc, err := lc.ListenPacket(context.Background(), network, addr)
		if err == nil {
			pc.Close()
		}
		return err == nil
	}
	// A TCP socket is only bound by Listen: bind by hand instead.
	ta, err := net.ResolveTCPAddr(network, addr)
	if err != nil {
		return false
	}
	family, sa := unix.AF_INET, unix.Sockaddr(nil)
	if ip4 := ta.IP.To4(); ip4 != nil || ta.IP == nil {
		a := &unix.SockaddrInet4{Port: ta.Port}
		copy(a.Addr[:], ip4)
		sa = a
	} else {
		family = unix.AF_INET6
		a := &unix.SockaddrInet6{Port: ta.Port}
		copy(a.Addr[:], ta.IP.To16())
		sa = a
	}
	syscall.ForkLock.RLock() // no fork between socket and close-on-exec
	fd, err := unix.Socket(family, unix.SOCK_STREAM, 0)
	if err == nil {
		unix.CloseOnExec(fd)
	}
	syscall.ForkLock.RUnlock()
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1) != nil {
		return false
	}
	return unix.Bind(fd, sa) == nil
}
