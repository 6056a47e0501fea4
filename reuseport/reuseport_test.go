package reuseport_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/forkline/forkline/reuseport"
)

// watchdog bounds every wait; it fails the test, it never paces it.
const watchdog = 10 * time.Second

func TestListenBadNetwork(t *testing.T) {
	for _, network := range []string{"udp", "unix", "ip4:icmp", "", "TCP", "tcp5"} {
		t.Run(network, func(t *testing.T) {
			ln, err := reuseport.Listen(context.Background(), network, "127.0.0.1:0")
			if err == nil {
				ln.Close()
				t.Fatalf("Listen(%q) succeeded", network)
			}
			if q := `"` + network + `"`; !strings.Contains(err.Error(), q) {
				t.Errorf("Listen(%q) error %q does not name the network", network, err)
			}
		})
	}
}

// TestBalance binds two listeners to one port and opens fresh connections
// until both have accepted some: with a balancing kernel each connection is
// hashed to one of them, so 200 all landing on one is a 2^-199 chance.
func TestBalance(t *testing.T) {
	if !reuseport.Supported() {
		t.Skip("the kernel does not balance SO_REUSEPORT here")
	}
	ctx := context.Background()
	a, err := reuseport.Listen(ctx, "tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b, err := reuseport.Listen(ctx, "tcp4", a.Addr().String())
	if err != nil {
		a.Close()
		t.Fatalf("second listener on the same port: %v", err)
	}

	const conns = 200
	accepted := make(chan int, 2*conns) // index of the listener
	var wg sync.WaitGroup
	for i, ln := range []*net.TCPListener{a, b} {
		wg.Go(func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return // closed below
				}
				c.Close()
				accepted <- i
			}
		})
	}
	defer wg.Wait()
	defer b.Close()
	defer a.Close()

	d := net.Dialer{Timeout: watchdog}
	for range conns {
		c, err := d.Dial("tcp4", a.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	var counts [2]int
	timeout := time.After(watchdog)
	for range conns {
		select {
		case i := <-accepted:
			counts[i]++
		case <-timeout:
			t.Fatalf("accepted %d+%d of %d connections", counts[0], counts[1], conns)
		}
	}
	t.Logf("listener a accepted %d, b %d", counts[0], counts[1])
	if counts[0] == 0 || counts[1] == 0 {
		t.Errorf("one listener accepted every connection: a %d, b %d", counts[0], counts[1])
	}
}

func TestListenNetworks(t *testing.T) {
	for _, tc := range []struct{ network, address string }{
		{"tcp", "127.0.0.1:0"},
		{"tcp4", "127.0.0.1:0"},
		{"tcp6", "[::1]:0"},
	} {
		t.Run(tc.network, func(t *testing.T) {
			ln, err := reuseport.Listen(context.Background(), tc.network, tc.address)
			if errors.Is(err, errors.ErrUnsupported) {
				t.Skip(err)
			}
			if err != nil {
				if tc.network == "tcp6" {
					t.Skipf("no IPv6 loopback: %v", err)
				}
				t.Fatal(err)
			}
			defer ln.Close()
			// A second socket on the same port binds wherever Control
			// works, balancing or not.
			ln2, err := reuseport.Listen(context.Background(), tc.network, ln.Addr().String())
			if err != nil {
				t.Fatalf("second listener on %v: %v", ln.Addr(), err)
			}
			ln2.Close()
		})
	}
}
