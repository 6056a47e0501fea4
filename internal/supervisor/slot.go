package supervisor

import (
	"fmt"
	"net"
	"time"

	"github.com/forkline/forkline/internal/wire"
)

// slot is one place for a worker: its id, the parent's copy of its socket
// and the worker serving in it. The parent keeps every slot's socket open
// for as long as the slot exists, so that connections queued on it outlive
// the worker serving it (a crash, a reload); it never accepts from it.
type slot struct {
	id       int
	fd       int     // the parent's copy of the slot's socket; -1 once closed
	own      bool    // fd is this slot's alone (reuseport mode)
	cur      *worker // the serving worker, or the one starting to serve
	failures int     // consecutive failed starts or crashes (the backoff)
	restarts int     // workers started in this slot after crashes
	respawn  *time.Timer
	parked   bool // Disconnect: empty until the next reload or SetWorkers
	removed  bool // scaled away

	recycleWhy string // why the recycle queued for it (Supervisor.recycles) was asked

	memDelay     time.Duration // MaxMemory: how long a fresh worker over the limit waits
	memNotBefore time.Time

	// Steering (steer.go).
	queue      int       // the accept queue at the last check
	queueSince time.Time // since when it has held connections without getting shorter
	stalled    bool      // out of the eligible list: its queue does not move
	pickable   bool      // the kernel may give it a new connection
	idleSince  time.Time // without steering: since when it has had no worker
	unlistened bool      // without steering: it stopped listening (no worker)
}

// addSlot appends a slot with its socket: a new SO_REUSEPORT socket in
// reuseport mode, the one shared socket in inherit mode. The first bind
// resolves port 0 for every later one.
func (s *Supervisor) addSlot() (*slot, error) {
	sl := &slot{id: len(s.slots) + 1}
	if s.cfg.Inherit && s.shared >= 0 {
		sl.fd = s.shared
	} else {
		fd, bound, err := s.cfg.Bind(s.cfg.Network, s.addr, !s.cfg.Inherit)
		if err != nil {
			return nil, err
		}
		s.addr, sl.fd = bound, fd
		if s.cfg.Inherit {
			s.shared = fd
		} else {
			sl.own = true
		}
	}
	if s.steer != nil {
		if err := s.steer.Add(sl.id-1, sl.fd); err != nil {
			sl.closeSocket()
			return nil, fmt.Errorf("prefork: steering slot %d: %w", sl.id, err)
		}
	}
	s.slots = append(s.slots, sl)
	return sl, nil
}

// resolveAddr checks that nothing listens on the address already
// (probeFree), and gives port 0 a number: a first socket binds it, every
// slot then binds that port by number, and release closes the first. A
// socket bound to port 0 loses its port when it stops listening, and a
// slot's socket must be able to listen again (checkIdle).
func (s *Supervisor) resolveAddr(real bool) (release func(), err error) {
	release = func() {}
	_, port, perr := net.SplitHostPort(s.addr)
	switch {
	case !real || perr != nil: // a bad address: the bind says what is wrong
		return release, nil
	case port != "0":
		return release, probeFree(s.cfg.Network, s.addr)
	case s.cfg.Inherit: // one socket: it never stops listening
		return release, nil
	}
	fd, bound, err := s.cfg.Bind(s.cfg.Network, s.addr, true)
	if err != nil {
		return nil, err
	}
	s.addr = bound
	return func() { closeFD(fd) }, nil
}

// closeSocket closes the slot's own socket (its copy: a worker holding one
// keeps the socket open until it closes its own).
func (sl *slot) closeSocket() {
	if sl.own && sl.fd >= 0 {
		closeFD(sl.fd)
	}
	sl.fd = -1
}

func (sl *slot) stopRespawn() {
	if sl.respawn != nil {
		sl.respawn.Stop()
		sl.respawn = nil
	}
}

// closeSockets closes the parent's copy of every slot's socket.
func (s *Supervisor) closeSockets() {
	for _, sl := range s.slots {
		sl.closeSocket()
	}
	if s.shared >= 0 {
		closeFD(s.shared)
		s.shared = -1
	}
}

// welcome is what every new worker is told first.
func (s *Supervisor) welcome() wire.Welcome {
	return wire.Welcome{
		MaxPayload: s.cfg.MaxMessageSize,
		Listeners:  []wire.Listener{{Network: s.cfg.Network, Addr: s.addr}},
		Heartbeat:  s.cfg.HeartbeatTimeout > 0,
	}
}
