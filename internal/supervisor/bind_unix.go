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
