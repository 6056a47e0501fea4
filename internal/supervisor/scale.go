package supervisor

import (
	"fmt"
	"os"
	"runtime"
	"strings"

	"github.com/forkline/forkline/internal/msg"
)

// scale changes the number of slots to n; during a handover (or before the
// cluster is ready) it waits, as a reload does, and next applies it.
func (s *Supervisor) scale(n int) error {
	switch {
	case s.phase >= stopping:
		return ErrClosed
	case n < 1:
		return fmt.Errorf("prefork: cannot run %d workers: at least 1", n)
	case s.phase == starting || s.ho != nil:
		s.target = n
		s.log.Info("scaling once the running start or reload is done", "workers", n)
		return nil
	}
	return s.applyScale(n)
}

// wanted is the number of workers the cluster is heading for.
func (s *Supervisor) wanted() int {
	if s.target > 0 {
		return s.target
	}
	return len(s.slots)
}

func (s *Supervisor) applyScale(n int) error {
	for len(s.slots) < n {
		sl, err := s.addSlot()
		if err != nil {
			return err
		}
		s.log.Info("scaling up", "worker", sl.id, "workers", len(s.slots))
		s.storeSockets(sl)
		s.spawn(sl, s.gen, nil)
	}
	if len(s.slots) > n && s.resetsQueue {
		s.log.Warn("net.ipv4.tcp_migrate_req is 0: connections still queued on a removed slot's socket are reset when it closes; set it to 1 (Linux 5.14+) to hand them to the other sockets")
	}
	for len(s.slots) > n {
		sl := s.slots[len(s.slots)-1]
		s.slots = s.slots[:len(s.slots)-1]
		s.removeSlot(sl)
	}
	for _, sl := range s.slots { // SetWorkers refills what Disconnect emptied
		if sl.parked && sl.cur == nil {
			sl.parked = false
			s.spawn(sl, s.gen, nil)
		}
	}
	return nil
}

// removeSlot takes sl away. The parent's copy of its socket closes first:
// the worker accepts from its own copy until it drains, and its close is
// the socket's last.
func (s *Supervisor) removeSlot(sl *slot) {
	sl.removed = true
	s.steerSlots() // out of the kernel's choice before its socket can close
	sl.stopRespawn()
	s.unstoreSlot(sl) // the worker's copy must be the last: it takes the queue
	s.closeSlot(sl)
	if w := sl.cur; w != nil {
		s.drain(w, "scale-down")
	}
	sl.cur = nil
	s.routesDirty = true
	s.log.Info("scaling down", "worker", sl.id, "workers", len(s.slots))
}

func migrateOff() bool {
	if runtime.GOOS != "linux" {
		return false
	}
	v, err := os.ReadFile("/proc/sys/net/ipv4/tcp_migrate_req")
	return err == nil && strings.TrimSpace(string(v)) == "0"
}

// serving returns the serving worker of slot id, or an error naming it.
func (s *Supervisor) serving(id int) (*worker, error) {
	if id < 1 || id > len(s.slots) || s.slots[id-1].cur == nil {
		return nil, fmt.Errorf("%w: %s", msg.ErrNoWorker, msg.AddrName(id))
	}
	return s.slots[id-1].cur, nil
}
