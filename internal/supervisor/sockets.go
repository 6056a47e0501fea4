package supervisor

import (
	"errors"
	"fmt"
	"net"
	"os"
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

// endpoint is one address as the parent holds it.
type endpoint struct {
	Address
	bound  string       // the address bound: port 0 resolved
	shared int          // inherit mode, and unix: one socket for every slot; -1: one per slot
	steer  *steer.Group // the program of its reuseport group, with steering
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
		ep := &endpoint{Address: a, bound: a.Addr, shared: -1}
		s.eps = append(s.eps, ep)
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
		if fd < 0 {
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
		if ep.shared >= 0 {
			closeFD(ep.shared)
			ep.shared = -1
			if ep.unix() {
				os.Remove(ep.Addr)
			}
		}
	}
}

// welcome is what every new worker is told first.
func (s *Supervisor) welcome() wire.Welcome {
	w := wire.Welcome{MaxPayload: s.cfg.MaxMessageSize, Heartbeat: s.cfg.HeartbeatTimeout > 0}
	for _, ep := range s.eps {
		w.Listeners = append(w.Listeners, wire.Listener{Name: ep.Name, Network: ep.Network, Addr: ep.bound})
	}
	return w
}
