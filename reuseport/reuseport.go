// Package reuseport opens TCP listeners with SO_REUSEPORT, so that several
// processes can each accept on their own socket bound to the same address
// and the kernel spreads new connections across them.
//
// This is how forkline's workers listen: each worker calls [Listen] on the
// shared address, and no descriptor has to be passed from the parent. Where
// the kernel does not balance ([Supported] reports false), the caller should
// fall back to one listener shared by all workers.
//
// # Platforms
//
//   - Linux (3.9 and later): SO_REUSEPORT balances; each new connection is
//     hashed on its 4-tuple to one socket of the group. This holds as well
//     for the Multipath TCP listeners that Go opens by default since 1.24.
//     Every socket of a group must be bound by the same effective user ID,
//     or bind fails with EADDRINUSE.
//   - FreeBSD (12 and later): plain SO_REUSEPORT does not balance, so
//     [Control] also sets SO_REUSEPORT_LB, which does.
//   - darwin, OpenBSD, NetBSD, DragonFly, AIX and the other unix systems:
//     [Control] sets SO_REUSEADDR and SO_REUSEPORT and several sockets can
//     bind the same address, but connections are not (or not knowingly)
//     balanced, so [Supported] is false. DragonFly may in fact balance; it is
//     reported false until someone tests it.
//   - Windows, Solaris, illumos, plan9, js/wasm, wasip1: [Control] fails
//     with an error that satisfies errors.Is(err, errors.ErrUnsupported).
//     Windows' SO_REUSEADDR means "steal the port", not "share it", and is
//     not used.
//
// # Closing a listener
//
// On Linux, a connection that completed the handshake but was not yet
// accepted sits in the accept queue of one particular socket of the group.
// Closing that socket resets it, unless net.ipv4.tcp_migrate_req=1 (Linux
// 5.14 and later) moves it to another socket of the group. A draining worker
// should therefore close its listener only once another one is listening on
// the address, and expect the few connections queued on it at that moment
// to be reset when the sysctl is off. New connections go to the remaining
// sockets as soon as the close returns.
//
// # Composing with an existing ListenConfig
//
// [Control] has the signature of [net.ListenConfig.Control]. An application
// with its own Control calls its own first and reuseport's last, as the
// example for Control shows: that way the application cannot switch
// SO_REUSEPORT off again by accident, and a failure in its own options stops
// the listen before the socket joins the group.
package reuseport

import (
	"context"
	"fmt"
	"net"
	"syscall"
)

// Control sets SO_REUSEADDR and SO_REUSEPORT on the socket (and on FreeBSD
// SO_REUSEPORT_LB) before it is bound. It has the signature of
// [net.ListenConfig.Control] and [net.Dialer.Control].
//
// Every failure is returned, never ignored: a failed setsockopt comes back
// as a wrapped [*os.SyscallError] naming "setsockopt", so errors.Is(err,
// unix.ENOPROTOOPT) and the like work. On platforms where Control can do
// nothing useful, the error satisfies errors.Is(err, errors.ErrUnsupported).
//
// Control is safe for concurrent use.
func Control(network, address string, c syscall.RawConn) error {
	if err := control(network, address, c); err != nil {
		return fmt.Errorf("reuseport: %w", err)
	}
	return nil
}

// Listen announces on the local network address with [Control] applied, like
// [net.Listen] but bounded by ctx while the listener is being set up. The
// network must be "tcp", "tcp4" or "tcp6"; any other network is an error
// naming it. Other errors are the [*net.OpError] of the failed listen, which
// wraps [Control]'s error when a socket option could not be set.
//
// Listen succeeds wherever Control does, including darwin and the BSDs where
// the kernel does not balance; check [Supported] to know whether it does.
// Once Listen has returned, ctx has no effect on the listener.
func Listen(ctx context.Context, network, address string) (*net.TCPListener, error) {
	switch network {
	case "tcp", "tcp4", "tcp6":
	default:
		return nil, fmt.Errorf("reuseport: cannot listen on network %q: want \"tcp\", \"tcp4\" or \"tcp6\"", network)
	}
	lc := net.ListenConfig{Control: Control}
	ln, err := lc.Listen(ctx, network, address)
	if err != nil {
		return nil, err
	}
	return ln.(*net.TCPListener), nil
}

// Supported reports whether the kernel balances new connections across the
// sockets that share an address through [Listen]. It is true only on Linux
// and FreeBSD, and only when a probe succeeds: the first call binds two
// listeners to the same loopback port (127.0.0.1, else [::1]) and closes
// them again; later calls return the cached result. A kernel that rejects
// the socket options (ENOPROTOOPT on Linux before 3.9, FreeBSD before 12
// without SO_REUSEPORT_LB) or a host without a loopback address gives false.
//
// Supported is safe for concurrent use.
func Supported() bool {
	return supported()
}
