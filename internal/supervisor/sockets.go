package supervisor

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/forkline/forkline/internal/steer"
	"github.com/forkline/forkline/internal/wire"
)

// Address is one address the cluster serves; Config.Addrs[0] is the main
// one, handed to the serving function.
type Address struct {
	Name    string
	Network string      // tcp, tcp4, tcp6, udp, udp4, udp6, unix
	Addr    string      // host:port, or a path for unix
	Perm    os.FileMode // unix: the socket file's permissions
}

// Inherited is a listening socket the parent was given: by the service
// manager's socket activation, or from its fd store after a restart.
type Inherited struct {
	FD   int
	Name string // LISTEN_FDNAMES: the socket unit's name for it, or its store name
}

// endpoint is one address as the parent holds it.
type endpoint struct {
	Address
	bound  string       // the address bound: port 0 resolved
	shared int          // inherit mode, and unix: one socket for every slot; -1: one per slot
	steer  *steer.Group // the program of its reuseport group, with steering

	adopted  []adopted // inherited sockets for it, until the slots take them
	given    bool      // its shared socket was inherited: its unix path is not ours to remove
	steerFDs []int     // its steering group from the fd store, until steerEndpoints adopts it
}

// adopted is an inherited socket matched to an endpoint: slot is the slot
// its store name says it belonged to, 0 when it says none.
type adopted struct {
	fd, slot int
}

func (ep *endpoint) stream() bool { return !strings.HasPrefix(ep.Network, "udp") }
func (ep *endpoint) unix() bool   { return ep.Network == "unix" }

// openEndpoints binds the endpoints that all slots share, and checks the
// others: a served address must be free (probeFree), and port 0 is given a
// number by a first socket (release closes it once the slots are bound).
// Every per-slot socket binds its port by number: a socket bound to port 0
// loses its port when it stops listening, and a slot's socket must be able
// to listen again (checkIdle).
func (s *Supervisor) openEndpoints(real bool) (release func(), err error) {
	var held []int
	release = func() {
		for _, fd := range held {
			closeFD(fd)
		}
	}
	for _, a := range s.cfg.Addrs {
		s.eps = append(s.eps, &endpoint{Address: a, bound: a.Addr, shared: -1})
	}
	s.adopt()
	for _, ep := range s.eps {
		a := ep.Address
		if len(ep.adopted) > 0 {
			s.useAdopted(ep)
			continue
		}
		if s.cfg.Inherit || ep.unix() {
			if ep.shared, ep.bound, err = s.bindShared(ep); err != nil {
				release()
				return nil, err
			}
			continue
		}
		_, port, perr := net.SplitHostPort(a.Addr)
		switch {
		case !real || perr != nil: // a bad address: the bind says what is wrong
		case port != "0":
			err = probeFree(a.Network, a.Addr)
		default:
			var fd int
			if fd, ep.bound, err = s.cfg.Bind(a.Network, a.Addr, true); err == nil {
				held = append(held, fd)
			}
		}
		if err != nil {
			release()
			return nil, err
		}
	}
	return release, nil
}

// adopt matches each inherited socket to the endpoint it serves: by its
// store name ("<name>.<slot>", see storeName), by the name the manager gave
// it (the address's Name, "main" for the main one), or else by the address
// it is bound to. One that matches none is closed, and the log says so.
func (s *Supervisor) adopt() {
	for _, in := range s.cfg.Inherited {
		if ep := s.steerOf(in.Name); ep != nil {
			ep.steerFDs = append(ep.steerFDs, in.FD)
			continue
		}
		kind, addr, err := sockName(in.FD)
		ep, slot := s.matchInherited(in.Name, kind, addr)
		if err != nil || ep == nil {
			s.log.Warn("an inherited socket serves no configured address: closed", "fd", in.FD, "name", in.Name, "addr", addr, "err", err)
			closeFD(in.FD)
			continue
		}
		ep.adopted = append(ep.adopted, adopted{in.FD, slot})
		s.log.Info("adopting an inherited socket", "fd", in.FD, "name", in.Name, "addr", addr, "worker", slot)
	}
	for _, ep := range s.eps {
		// The slots' own sockets in slot order, as the store named them.
		slices.SortStableFunc(ep.adopted, func(a, b adopted) int { return cmp.Compare(a.slot, b.slot) })
	}
}

// steerOf is the endpoint whose stored steering group name names.
func (s *Supervisor) steerOf(name string) *endpoint {
	for _, ep := range s.eps {
		if name == storeName(ep, 0)+steerSuffix {
			return ep
		}
	}
	return nil
}

func (s *Supervisor) matchInherited(name, kind, addr string) (*endpoint, int) {
	for _, ep := range s.eps {
		base := storeName(ep, 0)
		if name == base {
			return ep, 0
		}
		if n, ok := strings.CutPrefix(name, base+"."); ok {
			if slot, err := strconv.Atoi(n); err == nil && slot > 0 {
				return ep, slot
			}
		}
	}
	for _, ep := range s.eps {
		if kind != "" && kindOf(ep.Network) == kind && sameAddr(ep, addr) {
			return ep, 0
		}
	}
	return nil, 0
}

func kindOf(network string) string {
	switch {
	case strings.HasPrefix(network, "udp"):
		return "udp"
	case network == "unix":
		return "unix"
	}
	return "tcp"
}

// sameAddr reports whether a socket bound to addr serves ep's address.
func sameAddr(ep *endpoint, addr string) bool {
	if ep.unix() {
		return addr == ep.Addr
	}
	host, port, err := net.SplitHostPort(ep.Addr)
	h, p, err2 := net.SplitHostPort(addr)
	if err != nil || err2 != nil || port != p || port == "0" {
		return false
	}
	if host == "" {
		host = "0.0.0.0"
	}
	want, got := net.ParseIP(host), net.ParseIP(h)
	if want == nil {
		ips, err := net.LookupIP(host)
		if err != nil || len(ips) == 0 {
			return false
		}
		want = ips[0]
	}
	return want.Equal(got) || (want.IsUnspecified() && got.IsUnspecified())
}

// useAdopted makes ep's inherited sockets its own. Several are the slots'
// sockets (a socket unit with ReusePort=true, or the fd store): the cluster
// starts with that many slots. One socket is slot 1's if this process may
// add SO_REUSEPORT members to its group; if not (the socket lacks
// SO_REUSEPORT, or a User= service gets a socket of root's), every worker
// shares it, as in inherit mode.
func (s *Supervisor) useAdopted(ep *endpoint) {
	_, bound, err := sockName(ep.adopted[0].fd)
	if err == nil {
		ep.bound = bound
	}
	if s.cfg.Inherit || ep.unix() || (len(ep.adopted) == 1 && !canJoin(ep.Network, ep.bound)) {
		if !s.cfg.Inherit && !ep.unix() {
			s.log.Info("the one inherited socket cannot get SO_REUSEPORT siblings from this process: every worker shares it (inherit mode for this address)", "addr", ep.bound)
		}
		ep.shared, ep.given = ep.adopted[0].fd, true
		for _, a := range ep.adopted[1:] {
			closeFD(a.fd)
		}
		ep.adopted = nil
	}
}

// adoptedSlots is the number of slots the inherited sockets make, and
// whether they came from the fd store (named by slot).
func (s *Supervisor) adoptedSlots() (n int, stored bool) {
	for _, ep := range s.eps {
		n = max(n, len(ep.adopted))
		for _, a := range ep.adopted {
			stored = stored || a.slot > 0
		}
	}
	return n, stored
}

// bindShared binds the one socket of an endpoint that every slot shares.
func (s *Supervisor) bindShared(ep *endpoint) (int, string, error) {
	if ep.unix() {
		if err := removeStale(ep.Addr); err != nil {
			return -1, "", err
		}
	}
	fd, bound, err := s.cfg.Bind(ep.Network, ep.Addr, false)
	if err == nil && ep.unix() && ep.Perm != 0 {
		if err = os.Chmod(ep.Addr, ep.Perm); err != nil {
			closeFD(fd)
			return -1, "", fmt.Errorf("prefork: %w", err)
		}
	}
	return fd, bound, err
}

// removeStale removes a unix socket file that nothing listens on (left by
// a parent that died), and refuses to take over one that is served.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil || fi.Mode()&os.ModeSocket == 0 {
		return nil // not a socket: the bind says what is wrong
	}
	if c, err := net.Dial("unix", path); err == nil {
		c.Close()
		return fmt.Errorf("prefork: listen unix %s: something serves it already", path)
	}
	return os.Remove(path)
}

// addSlot appends a slot with its sockets: a new SO_REUSEPORT socket for
// each endpoint of its own, the shared one for the others.
func (s *Supervisor) addSlot() (*slot, error) {
	sl := &slot{id: len(s.slots) + 1}
	for _, ep := range s.eps {
		fd := ep.shared
		if fd < 0 && len(ep.adopted) > 0 {
			fd, ep.adopted = ep.adopted[0].fd, ep.adopted[1:]
		} else if fd < 0 {
			var err error
			if fd, _, err = s.cfg.Bind(ep.Network, ep.bound, true); err != nil {
				s.closeSlot(sl)
				return nil, err
			}
			if ep.steer != nil {
				if err := ep.steer.Add(sl.id-1, fd); err != nil {
					closeFD(fd)
					s.closeSlot(sl)
					return nil, fmt.Errorf("prefork: steering slot %d: %w", sl.id, err)
				}
			}
		}
		sl.fds = append(sl.fds, fd)
	}
	s.slots = append(s.slots, sl)
	return sl, nil
}

// closeSlot closes the slot's own sockets (its copies: a worker holding
// one keeps the socket open until it closes its own).
func (s *Supervisor) closeSlot(sl *slot) {
	for i, fd := range sl.fds {
		if fd >= 0 && s.eps[i].shared < 0 {
			closeFD(fd)
		}
		sl.fds[i] = -1
	}
	sl.closed = true
}

// closeSockets closes the parent's copy of every socket, and removes the
// unix sockets' files: a stopping cluster takes no new connection there.
func (s *Supervisor) closeSockets() {
	for _, sl := range s.slots {
		s.closeSlot(sl)
	}
	for _, ep := range s.eps {
		for _, a := range ep.adopted {
			closeFD(a.fd)
		}
		for _, fd := range ep.steerFDs {
			closeFD(fd)
		}
		ep.adopted, ep.steerFDs = nil, nil
		if ep.shared >= 0 {
			closeFD(ep.shared)
			ep.shared = -1
			if ep.unix() && !ep.given {
				os.Remove(ep.Addr)
			}
		}
	}
}

// welcome is what every new worker is told first.
func (s *Supervisor) welcome() wire.Welcome {
	w := wire.Welcome{MaxPayload: s.cfg.MaxMessageSize, Heartbeat: s.cfg.HeartbeatTimeout > 0, Kept: s.storing()}
	for _, ep := range s.eps {
		w.Listeners = append(w.Listeners, wire.Listener{Name: ep.Name, Network: ep.Network, Addr: ep.bound})
	}
	return w
}
