package supervisor

import (
	"errors"
	"fmt"
	"os"
)

// A handover gives slots to new workers without a moment of lost service:
// each successor starts beside the worker it replaces, on the same socket,
// and once every successor serves, the old workers drain. A reload is the
// handover of every slot to a new generation (SIGHUP, Reload); a recycle,
// of one slot in the same generation (MaxRequests, MaxMemory, a worker
// stopped by someone else's SIGTERM). One handover runs at a time: a reload
// requested meanwhile waits as s.queued (any number of requests fold into
// it), a recycle waits in s.recycles, a change of the worker count in
// s.target; next starts them in that order when the running one ends.
//
// The whole walk is here: begin (beginReload, beginRecycle), the
// successors' reports (successorReady, successorExited), and the end
// (commit or abortHandover, then finishHandover).
type handover struct {
	kind    handoverKind
	gen     int
	reason  string
	next    map[*slot]*worker // the successors
	waiters []chan<- error    // Reload calls waiting for the outcome
}

type handoverKind int

const (
	reload handoverKind = iota + 1
	recycle
)

var errOvertaken = errors.New("overtaken by a reload")

// requestReload starts a reload, or queues one behind what runs. done, if
// not nil, receives the outcome.
func (s *Supervisor) requestReload(done chan<- error) {
	var waiters []chan<- error
	if done != nil {
		waiters = append(waiters, done)
	}
	switch {
	case s.phase >= stopping:
		notify(waiters, ErrClosed)
	case s.phase == starting || (s.ho != nil && s.ho.kind == reload) || s.upg != nil:
		if s.queued == nil {
			s.queued = &handover{kind: reload}
			s.log.Info("reload queued behind the one running")
		}
		s.queued.waiters = append(s.queued.waiters, waiters...)
	case s.ho != nil:
		// A recycle runs: the reload replaces that worker too. Queued, it
		// starts as soon as the recycle's abort ends it.
		s.recycles = nil
		s.queued = &handover{kind: reload, waiters: waiters}
		s.abortHandover(s.ho, errOvertaken)
	default:
		s.beginReload(waiters)
	}
}

func (s *Supervisor) beginReload(waiters []chan<- error) {
	s.lastGen++
	h := &handover{kind: reload, gen: s.lastGen, reason: "reload", next: make(map[*slot]*worker), waiters: waiters}
	s.ho = h
	s.recycles = nil // the reload replaces every worker
	s.log.Info("reloading", "gen", h.gen, "parent", os.Getpid())
	s.emit(Event{Type: EventReloading, Gen: h.gen})
	// Each new worker has ReadyTimeout to become ready; one that is late
	// or fails aborts the reload, and the old generation serves on.
	for _, sl := range s.slots {
		if s.ho != h {
			return // a start failed and aborted it
		}
		s.spawn(sl, h.gen, h)
	}
}

// requestRecycle queues the replacement of w, a slot's serving worker.
func (s *Supervisor) requestRecycle(w *worker, reason string) {
	sl := w.slot
	if s.phase != serving || sl.cur != w || w.state != Listening {
		return
	}
	if s.ho != nil {
		if s.ho.kind == recycle && s.ho.next[sl] == nil && !containsSlot(s.recycles, sl) {
			s.recycles = append(s.recycles, sl) // a reload replaces it anyway
			sl.recycleWhy = reason
		}
		return
	}
	s.beginRecycle(sl, reason)
}

func (s *Supervisor) beginRecycle(sl *slot, reason string) {
	h := &handover{kind: recycle, gen: s.gen, reason: reason, next: make(map[*slot]*worker)}
	s.ho = h
	s.log.Info("recycling worker", sl.cur.attrs("reason", reason)...)
	s.spawn(sl, s.gen, h)
}

// successorReady: a successor serves; once all do, the handover commits.
func (s *Supervisor) successorReady(w *worker) {
	h := w.ho
	if h != s.ho {
		return
	}
	for _, n := range h.next {
		if n.state != Listening {
			return
		}
	}
	s.commit(h)
}

// commit makes every successor its slot's serving worker and drains the
// workers they replace.
func (s *Supervisor) commit(h *handover) {
	for sl, w := range h.next {
		old := sl.cur
		sl.cur, w.ho = w, nil
		if old != nil {
			s.drain(old, h.reason)
		}
		if h.kind == reload {
			sl.failures, sl.parked = 0, false
		}
	}
	s.routesDirty = true
	if h.kind == reload {
		s.gen = h.gen
		s.log.Info("reloaded", "gen", h.gen)
	} else {
		for _, w := range h.next {
			s.log.Info("recycled", w.attrs("reason", h.reason)...)
		}
	}
	s.finishHandover(h, nil)
}

// successorExited: a successor ended before its handover committed; the
// handover fails, and the workers it would have replaced serve on.
func (s *Supervisor) successorExited(w *worker, err error, ex Exit) {
	h := w.ho
	delete(h.next, w.slot)
	if h != s.ho {
		return
	}
	if err == nil {
		err = &WorkerError{ID: w.id, Gen: w.gen, PID: w.pid, Err: fmt.Errorf("stopped before it served: %s", formatStatus(ex))}
	}
	if h.kind == reload {
		s.log.Error("new worker failed during reload", w.attrs("status", formatStatus(ex), "err", err)...)
	} else {
		s.log.Error("replacement worker failed, the old one keeps serving", w.attrs("err", err)...)
	}
	s.abortHandover(h, err)
}

// abortHandover stops h's successors; the workers they were to replace
// keep serving.
func (s *Supervisor) abortHandover(h *handover, err error) {
	if h.kind == reload {
		s.log.Error("reload failed, the old generation keeps serving", "gen", h.gen, "err", err)
	}
	for _, w := range h.next {
		s.drain(w, "handover aborted: "+err.Error())
	}
	s.finishHandover(h, err)
}

// finishHandover ends h and starts what waited for it.
func (s *Supervisor) finishHandover(h *handover, err error) {
	if s.ho == h {
		s.ho = nil
	}
	notify(h.waiters, err)
	if h.kind == reload {
		s.countReload(err)
		s.emit(Event{Type: EventReloaded, Gen: h.gen, Err: err})
	}
	s.next()
}

// next starts what waits for the running handover to end: a queued
// reload, then queued recycles, then a change of the worker count.
func (s *Supervisor) next() {
	if s.phase != serving || s.ho != nil || s.upg != nil {
		return
	}
	if s.upgradeWanted {
		waiters := s.upgradeQueued
		s.upgradeWanted, s.upgradeQueued = false, nil
		s.beginUpgrade(waiters)
		return
	}
	if q := s.queued; q != nil {
		s.queued = nil
		s.beginReload(q.waiters)
		return
	}
	for len(s.recycles) > 0 {
		sl := s.recycles[0]
		s.recycles = s.recycles[1:]
		if !sl.removed && sl.cur != nil && sl.cur.state == Listening {
			s.beginRecycle(sl, sl.recycleWhy)
			return
		}
	}
	if n := s.target; n > 0 {
		s.target = 0
		if err := s.applyScale(n); err != nil {
			s.log.Warn("cannot scale", "workers", n, "err", err)
		}
	}
}

// endHandovers fails the running handover and the queued reload: the
// cluster stops (the stop drains every worker, successors included).
func (s *Supervisor) endHandovers(err error) {
	if h := s.ho; h != nil {
		s.ho = nil
		notify(h.waiters, err)
		if h.kind == reload {
			s.countReload(err)
			s.emit(Event{Type: EventReloaded, Gen: h.gen, Err: err})
		}
	}
	if q := s.queued; q != nil {
		s.queued = nil
		notify(q.waiters, err)
	}
	s.recycles, s.target = nil, 0
}

func (s *Supervisor) countReload(err error) {
	if err == nil {
		s.counts.reloadsOK++
	} else {
		s.counts.reloadsFailed++
	}
}

func notify(waiters []chan<- error, err error) {
	for _, done := range waiters {
		done <- err
	}
}

func containsSlot(slots []*slot, sl *slot) bool {
	for _, x := range slots {
		if x == sl {
			return true
		}
	}
	return false
}
