package main

import (
	"context"
	"fmt"
	"syscall"
	"time"
)

// usage is what the leak check compares.
type usage struct {
	fds     int
	kinds   map[string]int
	threads int
	idle    int            // threads idle in the Go runtime
	waits   map[string]int // the other threads, by wchan
	procs   int
}

func (s *soak) measure(p *parent) (usage, error) {
	var u usage
	var err error
	if u.fds, u.kinds, err = fdKinds(p.pid); err != nil {
		return u, err
	}
	if u.threads, err = threads(p.pid); err != nil {
		return u, err
	}
	u.idle, u.waits = threadWaits(p.pid)
	u.procs = len(procsRunning(s.bin))
	return u, nil
}

// restartResult is what the restarted parent showed.
type restartResult struct {
	goneAfter  time.Duration // the first parent's workers, after its SIGKILL
	readyAfter time.Duration // the new parent, after the SIGKILL
	served     int64         // answers after the new parent was ready
	exit       string
	left       int
}

// soak runs the phases: start, faults, settle and measure, parent restart,
// load until the end, graceful stop.
func (s *soak) soak(ctx context.Context) error {
	var err error
	if s.p1, err = startParent(s.cfg, s.bin, s.addr); err != nil {
		return err
	}
	if err := s.p1.waitReady(30 * time.Second); err != nil {
		return err
	}
	if err := s.p1.understood(s.cfg.workers); err != nil {
		return err
	}
	if s.before, err = s.measure(s.p1); err != nil {
		return err
	}
	s.progress("parent %d ready on %s; seed %d", s.p1.pid, s.addr, s.cfg.seed)
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer func() { // on an error too: the report reads what the clients counted
		stopLoad()
		s.load.wait(s.cfg.timeout + 2*time.Second)
	}()
	s.t0 = time.Now()
	end := s.t0.Add(s.cfg.duration)
	s.load.start(loadCtx, s.cfg.closers, s.cfg.keepAlive)
	go s.watchPeak(loadCtx)
	tail := max(6*time.Second, s.cfg.duration/10)
	if s.pause(ctx, time.Second) {
		s.schedule(ctx, end.Add(-tail))
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	s.restore(ctx)
	if err := s.settleAndMeasure(); err != nil {
		return err
	}
	if err := s.restartParent(); err != nil {
		return err
	}
	s.pause(ctx, max(time.Until(end), 3*time.Second))
	stopLoad()
	if !s.load.wait(s.cfg.timeout + 2*time.Second) {
		return fmt.Errorf("clients did not finish within %v", s.cfg.timeout+2*time.Second)
	}
	s.restart.served = s.load.okSince.Load()
	s.stopRestarted()
	return ctx.Err()
}

// schedule runs faults every 0.5–2 s until the deadline, bounded in count.
func (s *soak) schedule(ctx context.Context, until time.Time) {
	for len(s.faults) < s.cfg.maxFaults {
		d := s.gap()
		if time.Now().Add(d).After(until) || !s.pause(ctx, d) {
			return
		}
		s.oneFault()
	}
}

// watchPeak records the most worker processes the first parent had at
// once (polling /proc: the kernel has no notification for it).
func (s *soak) watchPeak(ctx context.Context) {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if s.p1.exited() {
			return
		}
		if n := int64(len(procsRunning(s.bin)) - 1); n > s.peak.Load() {
			s.peak.Store(n)
		}
	}
}

// settleAndMeasure waits until the cluster is back at the starting count
// with every drained worker gone, then takes the leak figures.
func (s *soak) settleAndMeasure() error {
	want := s.cfg.workers
	ok := s.p1.tr.waitState(30*time.Second, 20*time.Millisecond, func() bool {
		return s.p1.tr.quiet(want) && len(procsRunning(s.bin)) == want+1
	})
	if !ok {
		slots := s.p1.tr.servingSlots()
		return fmt.Errorf("cluster not back to %d workers within 30s (serving %v, processes %d)", want, slots, len(procsRunning(s.bin)))
	}
	s.progress("settled at %s: %d workers", s.rel(time.Now()), want)
	var err error
	s.p1.tr.waitState(3*time.Second, 20*time.Millisecond, func() bool {
		s.after, err = s.measure(s.p1)
		return err != nil || s.after.fds == s.before.fds && sameCounts(s.after.waits, s.before.waits)
	})
	if err != nil {
		return err
	}
	s.check("no fd leak", fmt.Sprintf("%d → %d", s.before.fds, s.after.fds), s.after.fds == s.before.fds)
	s.check("no process leak", fmt.Sprintf("%d → %d", s.before.procs, s.after.procs), s.after.procs == s.before.procs)
	s.check("no thread leak", fmt.Sprintf("threads waiting outside the runtime: %s → %s (%d → %d threads; %d → %d idle)",
		formatKinds(s.before.waits), formatKinds(s.after.waits), s.before.threads, s.after.threads, s.before.idle, s.after.idle),
		sameCounts(s.after.waits, s.before.waits))
	return nil
}

// restartParent SIGKILLs the first parent, waits for its workers to die
// with it, and starts a new parent on the same port.
func (s *soak) restartParent() error {
	kids := s.p1.children(s.bin)
	f := &fault{at: time.Now(), kind: faultParent, victim: s.p1.pid}
	s.p1.signal(syscall.SIGKILL)
	if !s.p1.waitExit(5 * time.Second) {
		return fmt.Errorf("parent %d not reaped 5s after SIGKILL", s.p1.pid)
	}
	left := waitGone(kids, 10*time.Second)
	s.restart.goneAfter = time.Since(f.at)
	for _, k := range kids {
		k.close()
	}
	s.check("workers die with their parent", fmt.Sprintf("%d of %d still running 10s after the parent's SIGKILL", len(left), len(kids)), len(left) == 0)
	var err error
	if s.p2, err = startParent(s.cfg, s.bin, s.addr); err != nil {
		return err
	}
	if err := s.p2.waitReady(30 * time.Second); err != nil {
		return err
	}
	f.tr = s.p2.tr
	f.ackAt = s.p2.tr.line(s.p2.tr.find(time.Time{}, func(l logLine) bool { return l.msg == "cluster ready" })).at
	s.restart.readyAfter = f.ackAt.Sub(f.at)
	s.load.since.Store(f.ackAt.UnixNano())
	f.detail = fmt.Sprintf("SIGKILL parent pid %d; its %d workers gone after %v; new parent pid %d ready after %v",
		s.p1.pid, len(kids), s.restart.goneAfter.Round(time.Millisecond), s.p2.pid, s.restart.readyAfter.Round(time.Millisecond))
	s.record(f)
	return nil
}

// stopRestarted sends the new parent SIGTERM: it must exit 0 and leave no
// process behind.
func (s *soak) stopRestarted() {
	s.p2.signal(syscall.SIGTERM)
	if !s.p2.waitExit(20 * time.Second) {
		s.check("restarted parent exits on SIGTERM", "still running 20s after SIGTERM", false)
		return
	}
	code := s.p2.cmd.ProcessState.ExitCode()
	s.restart.exit = s.p2.cmd.ProcessState.String()
	s.check("restarted parent exits 0 on SIGTERM", s.restart.exit, code == 0)
	gone := s.p2.tr.waitState(5*time.Second, 20*time.Millisecond, func() bool { return len(procsRunning(s.bin)) == 0 })
	s.restart.left = len(procsRunning(s.bin))
	s.check("no process left", fmt.Sprintf("%d processes of ours running", s.restart.left), gone)
	s.check("restarted parent serves", fmt.Sprintf("%d answers after it was ready", s.restart.served), s.restart.served > 0)
}
