package supervisor

import (
	"fmt"
	"strconv"
	"time"
)

// The service manager (systemd's notify protocol, package sdnotify): what
// the supervisor tells it, and when. Every message goes from the loop, so
// that a wedged loop stops the watchdog's pings and the manager notices.

// Manager is the service manager the parent reports to.
type Manager interface {
	// Notify sends one message of newline-separated assignments.
	Notify(lines ...string) error
	// NotifyFDs sends one message with descriptors (the fd store).
	NotifyFDs(fds []int, lines ...string) error
}

// managerTick is how often, at most, the loop pings the watchdog and
// extends the manager's timeout while a drain runs.
const managerTick = time.Second

// extendMargin is what each EXTEND_TIMEOUT_USEC grants beyond the next tick.
const extendMargin = 2 * time.Second

// startManager starts the ticker of the watchdog and the timeout
// extensions; it ends with the loop.
func (s *Supervisor) startManager() {
	m := s.cfg.Manager
	if m == nil {
		return
	}
	tick := managerTick
	if d := s.cfg.Watchdog; d > 0 {
		tick = min(tick, d)
	}
	s.watchers.Add(1)
	go func() {
		defer s.watchers.Done()
		t := time.NewTicker(tick)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				s.call(s.managerTick)
			case <-s.done:
				return
			}
		}
	}()
}

// managerTick pings the watchdog and, while a stop or a reload runs within
// its bound, extends the manager's timeout.
func (s *Supervisor) managerTick() {
	if s.cfg.Watchdog > 0 {
		s.notify("WATCHDOG=1")
	}
	if left := time.Until(s.extendUntil); left > 0 && (s.phase >= stopping || s.ho != nil) {
		s.notify("EXTEND_TIMEOUT_USEC=" + strconv.FormatInt((min(left, managerTick)+extendMargin).Microseconds(), 10))
	}
}

// notify sends lines to the manager, if there is one; a failure is logged
// once per kind of message.
func (s *Supervisor) notify(lines ...string) {
	if s.cfg.Manager == nil {
		return
	}
	if err := s.cfg.Manager.Notify(lines...); err != nil && !s.notifyFailed {
		s.notifyFailed = true
		s.log.Warn("cannot notify the service manager", "err", err)
	}
}

// tellManager tells the manager what an event of the cluster means to it.
func (s *Supervisor) tellManager(ev Event) {
	switch ev.Type {
	case EventReady:
		s.notify("READY=1", "STATUS="+s.status())
	case EventReloading:
		s.extendUntil = time.Now().Add(s.cfg.ReadyTimeout + s.cfg.StopTimeout)
		s.notify("RELOADING=1", monotonicUsec(), "STATUS="+s.status())
	case EventReloaded:
		// READY=1 whether it served or not: the manager waits for it
		// either way (Type=notify-reload), and the old generation serves.
		// A stop that ends the reload has said STOPPING=1 instead.
		if s.phase < stopping {
			s.notify("READY=1", "STATUS="+s.status())
		}
	case EventStopping:
		s.extendUntil = time.Now().Add(s.cfg.StopTimeout + killGrace)
		s.notify("STOPPING=1", "STATUS="+s.status())
	case EventUpgrading:
		s.notify("RELOADING=1", monotonicUsec(), "STATUS=upgrading the parent in place")
	case EventUpgraded:
		s.notify("READY=1", "STATUS="+s.status())
	}
}

// reportStatus sends STATUS= when the status line changed (at the end of
// each turn of the loop).
func (s *Supervisor) reportStatus() {
	if s.cfg.Manager == nil || s.phase == starting {
		return
	}
	if st := s.status(); st != s.lastStatus {
		s.notify("STATUS=" + st)
	}
}

// status is the one line the manager shows: "gen 3: 4/4 ready".
func (s *Supervisor) status() string {
	ready := 0
	for _, sl := range s.slots {
		if sl.cur != nil && sl.cur.state == Listening {
			ready++
		}
	}
	st := fmt.Sprintf("gen %d: %d/%d ready", s.gen, ready, s.wanted())
	switch {
	case s.phase >= stopping:
		st += ", stopping"
	case s.ho != nil && s.ho.kind == reload:
		st += fmt.Sprintf(", reloading to gen %d", s.ho.gen)
	}
	s.lastStatus = st
	return st
}

// storing says whether the manager keeps a copy of the slots' sockets.
func (s *Supervisor) storing() bool { return s.cfg.Manager != nil && s.cfg.StoreSockets }

// storeName is the name a slot's socket has in the manager's fd store:
// "<address name>.<slot>", the main address being "main"; a socket every
// slot shares has no slot number.
func storeName(ep *endpoint, slot int) string {
	name := ep.Name
	if name == "" {
		name = "main"
	}
	if slot == 0 {
		return name
	}
	return name + "." + strconv.Itoa(slot)
}

// storeSlot pushes the sockets of sl (and the shared ones, once) to the
// manager's fd store, so that a restarted parent adopts them.
func (s *Supervisor) storeSockets(slots ...*slot) {
	if s.cfg.Manager == nil || !s.cfg.StoreSockets {
		return
	}
	for _, sl := range slots {
		for i, ep := range s.eps {
			fd, slot := sl.fds[i], sl.id
			if ep.shared >= 0 {
				if sl.id != 1 {
					continue
				}
				slot = 0
			}
			if err := s.cfg.Manager.NotifyFDs([]int{fd}, "FDSTORE=1", "FDNAME="+storeName(ep, slot)); err != nil {
				s.log.Warn("cannot store a socket with the service manager", "worker", sl.id, "name", storeName(ep, slot), "err", err)
			}
		}
	}
}

// steerSuffix ends the store name of an address's steering group.
const steerSuffix = ".steer"

// storeSteering pushes each steering group to the fd store: the sockets
// stored are in its socket array, which no other group can take them from.
func (s *Supervisor) storeSteering() {
	if !s.storing() {
		return
	}
	for _, ep := range s.eps {
		if ep.steer == nil {
			continue
		}
		if err := s.cfg.Manager.NotifyFDs(ep.steer.FDs(), "FDSTORE=1", "FDNAME="+storeName(ep, 0)+steerSuffix); err != nil {
			s.log.Warn("cannot store the steering program with the service manager", "addr", ep.bound, "err", err)
		}
	}
}

// unstoreSlot takes a removed slot's sockets out of the fd store.
func (s *Supervisor) unstoreSlot(sl *slot) {
	if s.cfg.Manager == nil || !s.cfg.StoreSockets {
		return
	}
	for _, ep := range s.eps {
		if ep.shared < 0 {
			s.notify("FDSTOREREMOVE=1", "FDNAME="+storeName(ep, sl.id))
		}
	}
}
