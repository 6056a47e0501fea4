package supervisor

import (
	"errors"
	"fmt"
	"time"

	"github.com/forkline/forkline/internal/msg"
)

// onExit handles a reaped worker: Any state -> Dead. What it means comes
// from w.end, recorded when it was learned; a worker with none crashed.
func (s *Supervisor) onExit(w *worker, ex Exit, recvErr error) {
	delete(s.workers, w)
	w.timer.Stop()
	w.state = Dead
	sl := w.slot
	sl.requests += max(w.requests.Load(), 0)
	sl.cpu += ex.CPU
	gone := fmt.Errorf("%w: %s exited before it answered", msg.ErrNoWorker, msg.AddrName(w.id))
	s.reqs.FailTarget(w, gone)
	s.failRelayed(w)

	cause := s.causeOf(w, ex, recvErr)
	ev := Event{Type: EventExit, Worker: w.info(), ExitCode: ex.Code, Signal: ex.Signal, Asked: w.asked()}
	if w.end != nil {
		ev.Reason = w.end.reason
	}
	if cause != nil {
		ev.Err = &WorkerError{ID: w.id, Gen: w.gen, PID: w.pid, Err: cause}
	}
	info := w.info()
	info.State = Disconnected
	s.emit(Event{Type: EventDisconnect, Worker: info})
	s.emit(ev)
	s.log.Debug("exit", w.attrs("status", formatStatus(ex), "reason", ev.Reason)...)

	switch {
	case sl.cur == w:
		sl.cur = nil
		s.routesDirty = true
		s.servingExited(w, ev.Err, ex)
	case w.ho != nil:
		s.successorExited(w, ev.Err, ex)
	}
}

// causeOf says why w ended, or nil when the parent asked it to.
func (s *Supervisor) causeOf(w *worker, ex Exit, recvErr error) error {
	switch {
	case w.asked():
		return nil
	case w.end != nil && w.end.err != nil:
		return w.end.err
	case recvErr != nil && !isClosed(recvErr):
		return recvErr
	case !w.readyAt.IsZero():
		return errors.New("exited: " + formatStatus(ex))
	}
	return errors.New("exited before it was ready: " + formatStatus(ex))
}

// servingExited decides what follows the end of a slot's serving worker
// that the parent did not ask to go: a start that failed fails the
// cluster; otherwise the slot gets a new worker.
func (s *Supervisor) servingExited(w *worker, err error, ex Exit) {
	sl := w.slot
	switch {
	case err == nil, s.phase >= stopping, sl.removed:
		return
	case s.phase == starting:
		s.log.Error("worker failed at start", w.attrs("status", formatStatus(ex), "err", err)...)
		s.fail(err)
		return
	case w.end != nil && w.end.kind == endStopped:
		// An operator's kill, Kill, or systemd signalling the whole
		// cgroup before the parent: a stop, not a crash (onStopping said so).
	default:
		s.log.Warn("worker died, replacing it", w.attrs("status", formatStatus(ex), "err", err)...)
	}
	if !w.readyAt.IsZero() && time.Since(w.readyAt) >= stableAfter {
		sl.failures = 0
	}
	sl.restarts++
	s.counts.respawns++
	s.scheduleRespawn(sl, w.end == nil || w.end.kind != endStopped)
}

// scheduleRespawn starts a new worker in sl: at once the first time, then
// with a growing delay while the slot keeps failing (counted).
func (s *Supervisor) scheduleRespawn(sl *slot, counted bool) {
	if counted {
		sl.failures++
	}
	delay := backoff(sl.failures)
	if delay == 0 {
		s.spawn(sl, s.gen, nil)
		return
	}
	s.log.Warn("backing off before replacing worker", "worker", sl.id, "failures", sl.failures, "delay", delay)
	sl.stopRespawn()
	sl.respawn = s.after(delay, func() {
		sl.respawn = nil
		if s.phase < stopping && !sl.removed && !sl.parked && sl.cur == nil {
			s.spawn(sl, s.gen, nil)
		}
	})
}

// backoff is the delay before the n-th consecutive start of one slot.
func backoff(n int) time.Duration {
	if n <= 1 {
		return 0
	}
	d := float64(backoffMin)
	for i := 2; i < n && d < float64(backoffMax); i++ {
		d *= backoffFactor
	}
	return min(time.Duration(d), backoffMax)
}
