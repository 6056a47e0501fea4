//go:build unix

package reuseport

import (
	"syscall"

	libp2p "github.com/libp2p/go-reuseport"
)

// control sets SO_REUSEADDR and SO_REUSEPORT, and SO_REUSEPORT_LB on
// FreeBSD. go-reuseport's Control does exactly that on every unix system and
// returns the bare errno of the first setsockopt that fails, which Control
// then wraps.
func control(network, address string, c syscall.RawConn) error {
	return libp2p.Control(network, address, c)
}
