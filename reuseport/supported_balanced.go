//go:build linux || freebsd

package reuseport

import (
	"context"
	"sync"
)

// Linux (3.9+) balances SO_REUSEPORT groups; FreeBSD (12+) balances with
// SO_REUSEPORT_LB, which Control sets there. Both need a probe because an
// older kernel rejects the option. One file serves both: the probe is the
// same, only Control differs.

var probed = sync.OnceValue(func() bool {
	return probe("tcp4", "127.0.0.1:0") || probe("tcp6", "[::1]:0")
})

func supported() bool { return probed() }

// probe reports whether two listeners bind the same address.
func probe(network, address string) bool {
	ctx := context.Background()
	a, err := Listen(ctx, network, address)
	if err != nil {
		return false
	}
	defer a.Close()
	b, err := Listen(ctx, network, a.Addr().String())
	if err != nil {
		return false
	}
	b.Close()
	return true
}
