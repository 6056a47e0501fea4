package main

import (
	"context"
	"fmt"
	"sort"
	"syscall"
	"time"
)

// Fault kinds.
const (
	faultKill   = "kill"
	faultStall  = "stall"
	faultHUP    = "sighup"
	faultTTIN   = "sigttin"
	faultTTOU   = "sigttou"
	faultParent = "parent-kill"
)

// fault is one thing the schedule did to the cluster.
type fault struct {
	n       int
	at      time.Time // the fault's first signal
	killAt  time.Time // kill: the SIGKILL, after the victim was counted
	diedAt  time.Time // kill: the victim's pidfd said it exited
	pre     string    // kill: how long stopping and counting the victim took
	kind    string
	detail  string
	victim  int
	held    map[int]bool // kill: client ports of the victim's connections
	ack     int          // index of the parent's log line acknowledging it (-1: none)
	ackAt   time.Time    // stall: the SIGCONT; parent-kill: the new parent ready
	tr      *tracker     // the log it is acknowledged in
	end     time.Time    // the cluster is back to its wanted count serving
	ended   bool
	skipped bool
}

// effectAt is the first moment f can cause a failure: for a reload or a
// scaling, the parent's log line saying it began (less 10 ms, our reader's
// possible lag), not the signal, which may wait behind a running reload.
func (f *fault) effectAt() time.Time {
	if (f.kind == faultHUP || f.kind == faultTTIN || f.kind == faultTTOU) && f.ack >= 0 {
		return later(f.tr.line(f.ack).at.Add(-10*time.Millisecond), f.at)
	}
	return f.at
}

// windowEnd is the last moment a failure can still be attributed to f.
func (f *fault) windowEnd(timeout time.Duration) time.Time {
	if !f.ended {
		return time.Unix(1<<40, 0)
	}
	return f.end.Add(timeout)
}

func (s *soak) record(f *fault) *fault {
	f.n = len(s.faults) + 1
	if f.tr == nil {
		f.tr = s.p1.tr
	}
	if f.ack == 0 {
		f.ack = -1
	}
	s.faults = append(s.faults, f)
	s.progress("fault %d at %s: %s %s", f.n, s.rel(f.at), f.kind, f.detail)
	return f
}

// oneFault runs a random fault: SIGKILL a worker (30%), stall one (25%),
// a SIGHUP burst (25%), SIGTTIN or SIGTTOU (20%).
func (s *soak) oneFault() {
	switch r := s.rng.IntN(100); {
	case r < 30:
		s.kill()
	case r < 55:
		s.stall()
	case r < 80:
		s.hup()
	default:
		s.scale(0, "")
	}
}

// pick returns a random serving worker of the first parent, opened.
func (s *soak) pick(kind string) (*pidfd, int, bool) {
	slots := s.p1.tr.servingSlots()
	if len(slots) == 0 {
		s.record(&fault{at: time.Now(), kind: kind, detail: "skipped: no serving worker", skipped: true})
		return nil, 0, false
	}
	keys := make([]int, 0, len(slots))
	for k := range slots {
		keys = append(keys, k)
	}
	sort.Ints(keys)
	slot := keys[s.rng.IntN(len(keys))]
	p, err := openChild(slots[slot], s.p1.pid)
	if err != nil {
		s.record(&fault{at: time.Now(), kind: kind, detail: "skipped: " + err.Error(), skipped: true})
		return nil, 0, false
	}
	return p, slot, true
}

// kill stops a worker (so it accepts nothing more), counts the
// connections it holds, and SIGKILLs it.
func (s *soak) kill() {
	p, slot, ok := s.pick(faultKill)
	if !ok {
		return
	}
	defer p.close()
	f := &fault{at: time.Now(), kind: faultKill, victim: p.pid}
	if err := p.signal(syscall.SIGSTOP); err != nil {
		f.detail, f.skipped = fmt.Sprintf("skipped: SIGSTOP %d: %v", p.pid, err), true
		s.record(f)
		return
	}
	stopped := s.p1.tr.waitState(2*time.Second, time.Millisecond, func() bool { return allStopped(p.pid) })
	stoppedAt := time.Now()
	held, how, err := heldConns(p.pid, s.port)
	f.killAt = time.Now()
	f.pre = fmt.Sprintf("stopped in %v, counted in %v (%s)", ms(stoppedAt.Sub(f.at)), ms(f.killAt.Sub(stoppedAt)), how)
	p.signal(syscall.SIGKILL)
	if len(waitGone([]*pidfd{p}, 5*time.Second)) == 0 {
		f.diedAt = time.Now()
	}
	f.held = held
	f.detail = fmt.Sprintf("SIGKILL worker pid %d (slot %d), holding %d accepted connections", p.pid, slot, len(held))
	if err != nil || !stopped {
		f.detail += fmt.Sprintf(" (count unsure: stopped=%v err=%v)", stopped, err)
	}
	s.record(f)
}

// stall SIGSTOPs a worker for 100–800 ms, then SIGCONTs it.
func (s *soak) stall() {
	p, slot, ok := s.pick(faultStall)
	if !ok {
		return
	}
	defer p.close()
	d := 100*time.Millisecond + time.Duration(s.rng.Int64N(int64(700*time.Millisecond)))
	f := &fault{at: time.Now(), kind: faultStall, victim: p.pid}
	p.signal(syscall.SIGSTOP)
	s.pause(nil, d) // the stall itself
	p.signal(syscall.SIGCONT)
	f.ackAt = time.Now()
	f.detail = fmt.Sprintf("SIGSTOP worker pid %d (slot %d) for %v, then SIGCONT", p.pid, slot, f.ackAt.Sub(f.at).Round(time.Millisecond))
	s.record(f)
}

// hup sends the parent a burst of 1–5 SIGHUPs.
func (s *soak) hup() {
	n := 1 + s.rng.IntN(5)
	f := &fault{at: time.Now(), kind: faultHUP, detail: "1 SIGHUP"}
	if n > 1 {
		f.detail = fmt.Sprintf("%d SIGHUPs back to back", n)
	}
	for range n {
		s.p1.signal(syscall.SIGHUP)
	}
	s.record(f)
}

// scale sends SIGTTIN (dir > 0), SIGTTOU (dir < 0) or, for dir 0, either
// one at random, keeping the count within 1..4; it waits (watchdog 3 s)
// for the parent to say what it did.
func (s *soak) scale(dir int, why string) {
	wanted := s.p1.tr.wantedCount()
	if dir == 0 {
		dir = 1 - 2*s.rng.IntN(2)
	}
	if wanted+dir < 1 || wanted+dir > 4 {
		dir = -dir
	}
	f := &fault{at: time.Now(), kind: faultTTIN}
	sig := syscall.SIGTTIN
	if dir < 0 {
		f.kind, sig = faultTTOU, syscall.SIGTTOU
	}
	s.p1.signal(sig)
	f.ack = s.p1.tr.waitLine(f.at, 3*time.Second, func(l logLine) bool {
		return l.msg == "scaling up" || l.msg == "scaling down" || l.msg == "cannot scale"
	})
	f.detail = fmt.Sprintf("%d workers: no answer from the parent within 3s", wanted)
	if f.ack >= 0 {
		l := s.p1.tr.line(f.ack)
		f.detail = fmt.Sprintf("%d → %d workers", wanted, l.int("workers"))
		if l.msg == "cannot scale" {
			f.detail = fmt.Sprintf("%d workers, refused: %s", wanted, l.kv["err"])
		}
	}
	if why != "" {
		f.detail += " (" + why + ")"
	}
	s.record(f)
}

// restore scales back to the starting count once the schedule is over,
// each step after the schedule's usual pause (so that a restore is no
// likelier to land on the previous fault than any other fault is), and
// waiting out a reload, which refuses scaling; bounded in attempts.
func (s *soak) restore(ctx context.Context) {
	for range 20 {
		wanted := s.p1.tr.wantedCount()
		if wanted == s.cfg.workers || !s.pause(ctx, s.gap()) {
			return
		}
		s.p1.tr.waitState(15*time.Second, 50*time.Millisecond, func() bool { return !s.p1.tr.isReloading() })
		dir := 1
		if wanted > s.cfg.workers {
			dir = -1
		}
		s.scale(dir, "restore")
	}
}

// gap is the schedule's pause between two faults: 0.5–2 s.
func (s *soak) gap() time.Duration {
	return 500*time.Millisecond + time.Duration(s.rng.Int64N(int64(1500*time.Millisecond)))
}
