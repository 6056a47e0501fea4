//go:build unix && !solaris

package reuseport

import (
	"os"
	"syscall"

	libp2p "github.com/libp2p/go-reuseport"
)

// control sets SO_REUSEADDR and SO_REUSEPORT, and SO_REUSEPORT_LB on
// FreeBSD. go-reuseport's Control does exactly that on these systems, and
// returns either the error of c.Control or the bare errno of the first
// setsockopt that failed, which is named here.
func control(network, address string, c syscall.RawConn) error {
	err := libp2p.Control(network, address, c)
	if errno, ok := err.(syscall.Errno); ok {
		return os.NewSyscallError("setsockopt", errno)
	}
	return err
}
