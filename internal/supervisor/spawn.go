package supervisor

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/forkline/forkline/internal/wire"
)

// A worker's life on the parent's side: spawn starts it, watch waits for
// it (with its reader, which hands control frames to the loop), and the
// loop moves it through its states (onFrame, onReady) and out (stopWorker,
// then onExit in exit.go).

// exitReport is what a worker's watch goroutine hands the loop once the
// process is reaped and its channel has ended: its one crossing.
type exitReport struct {
	w       *worker
	exit    Exit
	recvErr error // why the channel ended: EOF, or a broken frame
}

// spawn starts a worker in sl for generation gen: the slot's serving worker
// when ho is nil, else a successor that takes over when ho commits. It
// returns nil when the process could not be started (that failure is
// handled here, as any failed start is).
func (s *Supervisor) spawn(sl *slot, gen int, ho *handover) *worker {
	if s.upg != nil && s.upg.stage == "quiesce" {
		return nil // the next parent fills the slot
	}
	st, err := s.start.Start(Spec{ID: sl.id, Gen: gen, FDs: sl.fds, Welcome: s.welcome()})
	if err != nil {
		s.log.Error("cannot start worker", "worker", sl.id, "gen", gen, "err", err)
		s.startFailed(sl, ho, &WorkerError{ID: sl.id, Gen: gen, Err: err})
		return nil
	}
	w := &worker{
		slot: sl, id: sl.id, gen: gen, pid: st.Process.Pid(), proc: st.Process, ch: st.Channel,
		beat: st.Beat, started: time.Now(), restarts: sl.restarts, ho: ho,
	}
	if ho == nil {
		sl.cur = w
	} else {
		ho.next[sl] = w
	}
	s.workers[w] = struct{}{}
	w.timer = s.after(s.cfg.ReadyTimeout, func() { s.onReadyTimeout(w) })
	s.log.Debug("fork", w.attrs()...)
	s.workerEvent(EventFork, w)
	s.watchers.Go(func() { s.watch(w) })
	if w.beat != nil {
		s.watchers.Go(func() { s.beatLoop(w) })
	}
	return w
}

// startFailed handles a worker that could not even be started (fork
// failed, the executable is gone) like any failed start.
func (s *Supervisor) startFailed(sl *slot, ho *handover, err *WorkerError) {
	switch {
	case s.phase == starting:
		s.fail(err)
	case ho != nil:
		s.abortHandover(ho, err)
	default:
		s.scheduleRespawn(sl, true)
	}
}

// watch is the one goroutine that waits for w's process. It reads w's
// channel until it ends, reaps the process and reports both to the loop.
func (s *Supervisor) watch(w *worker) {
	recvErr := make(chan error, 1)
	go func() { recvErr <- s.read(w) }() // watch waits for it below
	exit := w.proc.Wait()
	// The channel reaches EOF when the process is gone, unless a
	// descendant holds the worker's end: then cut it.
	t := time.AfterFunc(time.Second, func() { w.ch.Close() })
	err := <-recvErr
	t.Stop()
	w.ch.Close()
	if w.beat != nil {
		w.beat.Close()
	}
	s.exits <- exitReport{w, exit, err} // the loop runs while w is in s.workers
}

// read is w's reader goroutine: user frames are routed from here (route.go),
// control frames go to the loop. It returns why the channel ended.
func (s *Supervisor) read(w *worker) error {
	for {
		f, err := w.ch.Recv()
		if err == nil {
			err = s.onWorkerFrame(w, f)
		}
		if err == nil {
			continue
		}
		if errors.Is(err, wire.ErrDetached) { // an upgrade: the channel goes on in the next parent
			s.call(func() { s.readerDetached(w) })
			return err
		}
		if !isClosed(err) {
			// A broken channel: this worker cannot be trusted to follow
			// the protocol; it is replaced.
			s.call(func() {
				s.log.Error("bad frame from worker, replacing it", w.attrs("err", err)...)
				s.kill(w, ending{kind: endFailed, reason: "bad frame", err: err})
			})
		}
		return err
	}
}

// onWorkerFrame handles a frame from w on w's reader goroutine.
func (s *Supervisor) onWorkerFrame(w *worker, f wire.Frame) error {
	switch f.Type {
	case wire.TypeHello, wire.TypeReady, wire.TypeFailed, wire.TypeRecycle, wire.TypeStopping:
		wire.CloseFDs(f.FDs)
		select {
		case s.frames <- frame{w, f}:
		case <-s.done:
		}
		return nil
	case wire.TypePong: // an older worker's heartbeat: they have a socket of their own now
		return nil
	}
	switch {
	case f.Type >= wire.TypeUser:
		s.route(w, f)
		return nil
	case !f.Type.Known():
		// From a worker of a newer binary, which a reload runs under this
		// parent: what this version does not know, it ignores.
		wire.CloseFDs(f.FDs)
		s.log.Debug("control frame of an unknown type ignored", w.attrs("type", f.Type.String())...)
		return nil
	}
	wire.CloseFDs(f.FDs)
	return fmt.Errorf("%w: worker sent control frame %v, which only the parent sends", wire.ErrMalformed, f.Type)
}

// onFrame handles a control frame from w on the loop.
func (s *Supervisor) onFrame(w *worker, f wire.Frame) {
	if _, live := s.workers[w]; !live {
		return
	}
	switch f.Type {
	case wire.TypeHello:
		s.onHello(w, f.Payload)
	case wire.TypeReady:
		s.onReady(w, string(f.Payload))
	case wire.TypeFailed:
		w.setEnd(ending{kind: endFailed, err: errors.New(string(f.Payload))})
	case wire.TypeRecycle:
		s.requestRecycle(w, "MaxRequests reached")
	case wire.TypeStopping:
		s.onStopping(w, string(f.Payload[:min(len(f.Payload), 64)]))
	}
}

// onHello: Starting -> Online. The channel's limit is the lower of the
// parent's and the worker's.
func (s *Supervisor) onHello(w *worker, payload []byte) {
	h, err := wire.DecodeHello(payload)
	if err != nil {
		s.log.Error("bad hello from worker, replacing it", w.attrs("err", err)...)
		s.kill(w, ending{kind: endFailed, reason: "bad frame", err: err})
		return
	}
	if h.MaxPayload > 0 {
		w.ch.SetSendLimit(min(h.MaxPayload, s.cfg.MaxMessageSize))
	}
	if w.state == Starting {
		w.state = Online
	}
	s.routesDirty = true
	s.log.Debug("online", w.attrs()...)
	s.workerEvent(EventOnline, w)
}

// onReady: Online -> Listening. A serving worker makes the cluster ready
// once every slot has served; a successor reports to its handover.
func (s *Supervisor) onReady(w *worker, addr string) {
	if w.state >= Listening {
		return
	}
	w.state = Listening
	w.readyAt = time.Now()
	w.timer.Stop()
	w.unanswered = w.unanswered[:0] // heartbeats count from here
	s.routesDirty = true
	s.log.Debug("listening", w.attrs("addr", addr)...)
	s.emit(Event{Type: EventListening, Worker: w.info(), Addr: addr})
	if w.ho != nil {
		s.successorReady(w)
		return
	}
	if s.phase == starting && s.allServing() {
		s.phase = serving
		s.log.Info("cluster ready", "workers", len(s.slots), "gen", s.gen, "addr", s.Addr(), "parent", os.Getpid())
		s.emit(Event{Type: EventReady, Gen: s.gen, Addr: s.Addr()})
		s.next()
	}
}

func (s *Supervisor) allServing() bool {
	for _, sl := range s.slots {
		if sl.cur == nil || sl.cur.state != Listening {
			return false
		}
	}
	return true
}

// onStopping: w was sent SIGTERM by someone else (an operator, systemd
// signalling the whole cgroup). It keeps serving and waits for the parent:
// a serving worker is recycled (its successor is ready before it drains),
// any other is drained now. The cluster's own stop, if one is coming,
// drains it with the rest.
func (s *Supervisor) onStopping(w *worker, why string) {
	w.setEnd(ending{kind: endStopped, reason: "stopped on " + why, err: fmt.Errorf("stopped on %s", why)})
	if s.phase >= stopping {
		return // the stop drains it with the rest
	}
	s.log.Info("worker stopped on a signal, replacing it", w.attrs("signal", why)...)
	switch {
	case w.slot.cur == w && w.state == Listening && s.phase == serving:
		s.requestRecycle(w, "stopped on "+why)
	default:
		s.drain(w, "stopped on "+why)
	}
}

func (s *Supervisor) onReadyTimeout(w *worker) {
	if _, live := s.workers[w]; !live || w.state >= Listening {
		return
	}
	s.log.Error("worker not ready in time, killing it", w.attrs("timeout", s.cfg.ReadyTimeout)...)
	s.kill(w, ending{kind: endFailed, err: fmt.Errorf("not ready within %v", s.cfg.ReadyTimeout)})
}

// stopWorker is the one way a worker is told to go: it records e, asks
// with sig (nil: a drain request over the channel, SIGTERM if that cannot
// be sent) and kills the worker if it is still there after grace.
// Any state -> Draining.
func (s *Supervisor) stopWorker(w *worker, e ending, sig os.Signal, grace time.Duration) {
	w.setEnd(e)
	if w.state == Draining {
		return
	}
	w.state = Draining
	w.timer.Stop()
	s.routesDirty = true
	if sig == nil {
		drain := wire.Frame{Type: wire.TypeDrain, To: uint32(w.id)}
		if w.slot.closed && s.resetsQueue && (w.slot.removed || !s.storing()) {
			// The worker's copy is the last and the kernel would reset
			// its queue at close: the worker takes the queue first. (At
			// a stop, the manager's fd store keeps a copy for the next
			// parent, queue included.)
			drain.Payload = wire.DrainLast
		}
		if err := w.ch.SendControl(drain); err != nil {
			s.log.Warn("cannot ask worker to drain over its channel, sending SIGTERM", w.attrs("err", err)...)
			sig = syscall.SIGTERM
		}
	}
	if sig != nil {
		w.proc.Signal(sig)
	}
	w.timer = s.after(grace, func() {
		if _, live := s.workers[w]; live {
			s.log.Warn("worker still running after its grace, killing it", w.attrs("grace", grace, "reason", w.end.reason)...)
			w.proc.Signal(os.Kill)
		}
	})
}

// drain asks w to stop accepting, finish and exit, within StopTimeout.
func (s *Supervisor) drain(w *worker, reason string) {
	s.stopWorker(w, ending{kind: endAsked, reason: reason}, nil, s.cfg.StopTimeout)
}

// kill ends w at once, whatever its state: Any state -> Draining.
func (s *Supervisor) kill(w *worker, e ending) {
	w.setEnd(e)
	w.state = Draining
	w.timer.Stop()
	s.routesDirty = true
	w.proc.Signal(os.Kill)
}

func isClosed(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, wire.ErrClosed) ||
		errors.Is(err, syscall.ECONNRESET)
}
