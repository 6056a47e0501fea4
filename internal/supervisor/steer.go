package supervisor

import (
	"slices"
	"time"

	"github.com/forkline/forkline/internal/steer"
)

// Steering: the parent decides which slots' sockets the kernel may give a
// new connection (internal/steer). A slot is eligible while one of its
// workers is listening and it does not stall; the list is rewritten at the
// end of any loop step that changed a worker's state (steerSlots). Without
// the program (SteerOff, or no CAP_BPF, or not Linux), a slot that has no
// worker at all for idleSlotAfter stops listening instead (checkSlots).

// Steering modes (package prefork exports them).
const (
	SteerAuto     = iota // steer when the program loads; say once why not
	SteerOff             // never steer
	SteerRequired        // fail to start without it
)

const (
	// queueCheckInterval is how often the accept queues are read.
	queueCheckInterval = 50 * time.Millisecond
	// stallAfter: a queue that has held connections without ever getting
	// shorter for this long, while other slots accept, stalls its slot.
	stallAfter = 200 * time.Millisecond
	// idleSlotAfter: without steering, a slot with no worker for this long
	// stops listening until its next worker starts.
	idleSlotAfter = time.Second
)

// startSteering loads a program for the reuseport group of each endpoint
// that has a socket per slot, and attaches it.
func (s *Supervisor) startSteering() error {
	if s.cfg.Steering == SteerOff {
		return nil
	}
	err := s.steerEndpoints()
	if err != nil {
		s.closeSteering()
		if s.cfg.Steering == SteerRequired {
			return err
		}
		s.log.Warn("steering is off: the kernel picks sockets by its hash alone, and a slot without a worker stops listening after "+idleSlotAfter.String(), "err", err)
		return nil
	}
	if s.steering {
		s.log.Info("steering new connections to eligible slots (eBPF)", "workers", len(s.slots))
	}
	return nil
}

// steerGroup is ep's steering group: the one its inherited sockets are
// steered by (a restarted parent's fd store kept it: a socket cannot join
// another group's array), or a new one.
func (s *Supervisor) steerGroup(ep *endpoint) (*steer.Group, error) {
	fds := ep.steerFDs
	ep.steerFDs = nil
	if len(fds) > 0 {
		g, err := steer.Adopt(fds)
		if err == nil {
			s.log.Info("adopting the stored steering program", "addr", ep.bound)
			return g, nil
		}
		s.log.Warn("cannot adopt the stored steering program", "addr", ep.bound, "err", err)
		for _, fd := range fds {
			closeFD(fd)
		}
	}
	return steer.New()
}

func (s *Supervisor) steerEndpoints() error {
	for i, ep := range s.eps {
		if ep.shared >= 0 {
			continue
		}
		g, err := s.steerGroup(ep)
		if err != nil {
			return err
		}
		ep.steer = g
		if err := g.Attach(s.slots[0].fds[i]); err != nil {
			return err
		}
		for _, sl := range s.slots {
			if err := g.Add(sl.id-1, sl.fds[i]); err != nil {
				return err
			}
		}
		s.steering = true
	}
	return nil
}

// eligible says whether the kernel may pick sl's socket.
func (s *Supervisor) eligible(sl *slot) bool {
	if sl.removed || sl.stalled {
		return false
	}
	if w := sl.cur; w != nil && w.state == Listening {
		return true
	}
	if s.ho != nil {
		if w := s.ho.next[sl]; w != nil && w.state == Listening {
			return true
		}
	}
	return false
}

// steerSlots writes the eligible slots when they changed. With none, the
// list is empty and the kernel's own hash picks: a cluster with no worker
// able to accept is no worse off than without steering. It then notes,
// for Workers and the events, which slots the kernel may pick.
func (s *Supervisor) steerSlots() {
	if s.steering {
		var list []int
		for _, sl := range s.slots {
			if s.eligible(sl) {
				list = append(list, sl.id-1)
			}
		}
		if !slices.Equal(list, s.steered) || s.steered == nil {
			for _, ep := range s.eps {
				if ep.steer == nil {
					continue
				}
				if err := ep.steer.SetEligible(list); err != nil {
					s.log.Error("cannot steer: the eligible list was not written", "addr", ep.bound, "err", err)
					return
				}
			}
			s.steered = append(make([]int, 0, len(list)), list...)
			s.log.Debug("eligible slots", "slots", ids(list))
		}
	}
	for _, sl := range s.slots {
		s.setPickable(sl)
	}
}

// setPickable records whether the kernel may give sl a new connection,
// and emits EventEligible for its serving worker when that changed.
func (s *Supervisor) setPickable(sl *slot) {
	p := !sl.removed && !sl.unlistened
	if s.steering {
		p = len(s.steered) == 0 || slices.Contains(s.steered, sl.id-1)
	}
	if p == sl.pickable {
		return
	}
	sl.pickable = p
	if w := sl.cur; w != nil && w.state == Listening {
		s.emit(Event{Type: EventEligible, Worker: w.info()})
	}
}

func (s *Supervisor) closeSteering() {
	for _, ep := range s.eps {
		if ep.steer != nil {
			ep.steer.Close() // the group keeps the program until its last socket closes
			ep.steer = nil
		}
	}
	s.steering = false
}

func ids(indexes []int) []int {
	out := make([]int, len(indexes))
	for i, x := range indexes {
		out[i] = x + 1
	}
	return out
}

// checkSlots runs every queueCheckInterval: with steering it finds the
// slots whose worker stalls; without, the slots left without a worker.
func (s *Supervisor) checkSlots() {
	now := time.Now()
	for _, sl := range s.slots {
		if s.steering {
			s.checkStall(sl, now)
		} else {
			s.checkIdle(sl, now)
		}
	}
	s.steerSlots()
}

// checkStall reads sl's accept queue from the parent's copy: one that holds
// connections and has not got shorter for stallAfter belongs to a worker
// that does not accept (stopped, frozen, in a long GC, wedged), heartbeats
// or not. The slot leaves the list until the queue moves again; what is
// queued stays for that worker or its successor.
func (s *Supervisor) checkStall(sl *slot, now time.Time) {
	fd := s.mainStream(sl)
	if fd < 0 {
		return
	}
	q, err := queueLen(fd)
	if err != nil {
		return
	}
	prev := sl.queue
	sl.queue = q
	switch {
	case q == 0 || q < prev:
		sl.queueSince = time.Time{}
		if sl.stalled {
			sl.stalled = false
			s.log.Info("slot accepts again: steering new connections to it", "worker", sl.id, "queued", q)
		}
	case sl.queueSince.IsZero():
		sl.queueSince = now
	case !sl.stalled && now.Sub(sl.queueSince) >= stallAfter && s.othersAccept(sl):
		sl.stalled = true
		s.log.Warn("slot stalls: its queue has not moved; steering new connections away", "worker", sl.id, "queued", q, "for", now.Sub(sl.queueSince).Round(time.Millisecond))
	}
}

// mainStream is sl's own socket of the first stream endpoint, whose queue
// stands for the slot's (a worker that stalls stalls on every address), or
// -1 (a datagram-only cluster: no queue to read).
func (s *Supervisor) mainStream(sl *slot) int {
	for i, ep := range s.eps {
		if ep.stream() && ep.shared < 0 {
			return sl.fds[i]
		}
	}
	return -1
}

func (s *Supervisor) othersAccept(sl *slot) bool {
	for _, o := range s.slots {
		if o != sl && s.eligible(o) {
			return true
		}
	}
	return false
}

// checkIdle: without steering, a slot that has had no worker at all (a
// crash loop backing off, Disconnect) for idleSlotAfter stops listening, so
// that the kernel stops queueing connections nobody will accept; its next
// worker makes it listen again at its first Accept (a worker that dies
// before that leaves it as it is). What was queued on it is reset, unless
// net.ipv4.tcp_migrate_req=1 moves it to the other sockets; the log says
// which.
func (s *Supervisor) checkIdle(sl *slot, now time.Time) {
	fd := s.mainStream(sl)
	if sl.unlistened && listening(fd) {
		sl.unlistened = false // a worker made it listen again
	}
	if sl.unlistened || fd < 0 || sl.removed || s.hasWorker(sl) {
		sl.idleSince = time.Time{}
		return
	}
	if sl.idleSince.IsZero() {
		sl.idleSince = now
		return
	}
	if now.Sub(sl.idleSince) < idleSlotAfter {
		return
	}
	q, _ := queueLen(fd)
	for i, ep := range s.eps {
		if ep.stream() && ep.shared < 0 && sl.fds[i] >= 0 {
			if err := stopListening(sl.fds[i]); err != nil {
				s.log.Error("cannot stop an idle slot's socket listening", "worker", sl.id, "addr", ep.bound, "err", err)
			}
		}
	}
	sl.unlistened = true
	fate := "reset (net.ipv4.tcp_migrate_req=0)"
	if !s.resetsQueue {
		fate = "moved to the other sockets"
	}
	s.log.Warn("slot has had no worker for "+idleSlotAfter.String()+": it stops listening until its next worker starts", "worker", sl.id, "queued", q, "queued_connections", fate)
}

func (s *Supervisor) hasWorker(sl *slot) bool {
	if sl.cur != nil {
		return true
	}
	return s.ho != nil && s.ho.next[sl] != nil
}
