package prefork

import (
	"context"
	"fmt"
	"io/fs"
	"net"

	"github.com/forkline/forkline/internal/supervisor"
	"github.com/forkline/forkline/internal/worker"
)

// Address is one address a cluster serves (Config.Addresses).
type Address struct {
	// Name is how a serving function finds the address's listener or
	// socket (Listener, PacketConn); names are unique.
	Name string
	// Network: "tcp" (default), "tcp4", "tcp6", "udp", "udp4", "udp6" or
	// "unix".
	Network string
	// Addr: host:port; port 0 picks a free port once, for every worker.
	// For unix, the socket file's path: the parent creates it (replacing a
	// stale socket file nothing listens on), and removes it when the
	// cluster stops; workers never do.
	Addr string
	// Perm is the unix socket file's permissions; zero leaves them as
	// created (0777 less the umask).
	Perm fs.FileMode
}

// PacketFunc serves a worker's datagram socket, as ServeFunc serves a
// listener: pc.ReadFrom makes the worker ready at its first call; when ctx
// is cancelled (a drain), pc.ReadFrom fails with net.ErrClosed and what is
// queued on the socket stays there for the slot's next worker; return
// nil then. pc is a *net.UDPConn underneath; its other methods are the
// UDPConn's own.
type PacketFunc func(ctx context.Context, pc net.PacketConn) error

// ServePacket runs the cluster with fn serving each worker's socket of the
// cluster's datagram address (Network "udp", "udp4" or "udp6"): one
// SO_REUSEPORT socket per slot, kept by the parent across crashes and
// reloads like a TCP slot's. In the parent it supervises, as Serve does.
func (c *Cluster) ServePacket(fn PacketFunc) error {
	return c.serve(true, func(cfg Config) error {
		wk, err := worker.Open(cfg.workerConfig())
		if err != nil {
			return err
		}
		defer c.attach(wk)()
		return wk.ServePacket(worker.PacketFunc(fn), c.stop)
	})
}

// Listener returns, in a worker's serving function, the worker's listener
// of the stream address (TCP or unix) named name in Config.Addresses; ctx
// is the serving function's. It drains with the main one.
func Listener(ctx context.Context, name string) (net.Listener, error) {
	return worker.Listener(ctx, name)
}

// PacketConn returns, in a worker's serving function, the worker's socket
// of the datagram address named name in Config.Addresses.
func PacketConn(ctx context.Context, name string) (net.PacketConn, error) {
	return worker.PacketConn(ctx, name)
}

// TCPListener returns the *net.TCPListener under a listener forkline gave
// a serving function, for its socket options. Accept from ln itself: the
// drain hands out the queued connections through it.
func TCPListener(ln net.Listener) (*net.TCPListener, bool) {
	if t, ok := ln.(interface {
		TCPListener() (*net.TCPListener, bool)
	}); ok {
		return t.TCPListener()
	}
	tl, ok := ln.(*net.TCPListener)
	return tl, ok
}

// addrs is the addresses the supervisor binds, the main one first.
func (c Config) addrs() []supervisor.Address {
	if len(c.Addresses) == 0 {
		return []supervisor.Address{{Network: c.Network, Addr: c.Addr}}
	}
	var out []supervisor.Address
	for _, a := range c.Addresses {
		out = append(out, supervisor.Address{Name: a.Name, Network: a.Network, Addr: a.Addr, Perm: a.Perm})
	}
	return out
}

// checkAddresses refuses an address the cluster cannot serve.
func checkAddresses(c Config) error {
	if len(c.Addresses) > 0 && (c.Addr != "" || c.Network != "") {
		return fmt.Errorf("prefork: Config.Addresses and Config.Addr/Network are both set: Addresses lists every address")
	}
	all := c.Addresses
	if len(all) == 0 {
		all = []Address{{Network: c.Network, Addr: c.Addr}}
	}
	names := map[string]bool{}
	for i, a := range all {
		switch a.Network {
		case "", "tcp", "tcp4", "tcp6", "udp", "udp4", "udp6", "unix":
		default:
			field := "Config.Network"
			if len(c.Addresses) > 0 {
				field = fmt.Sprintf("Config.Addresses[%d] (%q): network", i, a.Name)
			}
			return fmt.Errorf("prefork: %s %q: want tcp, tcp4, tcp6, udp, udp4, udp6 or unix", field, a.Network)
		}
		if len(c.Addresses) > 0 && a.Addr == "" {
			return fmt.Errorf("prefork: Config.Addresses[%d] (%q) has no Addr", i, a.Name)
		}
		if a.Network == "unix" && a.Addr == "" {
			return fmt.Errorf("prefork: a unix address needs a path")
		}
		if names[a.Name] {
			return fmt.Errorf("prefork: Config.Addresses: the name %q is given twice", a.Name)
		}
		names[a.Name] = true
	}
	return nil
}
