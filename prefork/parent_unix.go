//go:build unix

package prefork

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/oklog/run"
	"golang.org/x/sys/unix"

	"github.com/forkline/forkline/internal/wire"
	"github.com/forkline/forkline/reuseport"
	"github.com/forkline/forkline/signals"
)

// Respawn backoff: the first replacement after a crash starts at once; each
// further consecutive failure of the same slot waits 1.5 times longer, from
// backoffMin up to backoffMax. A worker that stays ready for stableAfter
// resets its slot's count.
const (
	backoffMin    = 100 * time.Millisecond
	backoffMax    = 30 * time.Second
	backoffFactor = 1.5
	stableAfter   = 10 * time.Second
)

type workerState int

const (
	stateStarting workerState = iota // process started, channel not yet up
	stateOnline                      // channel up (Node's "online")
	stateReady                       // serving (Node's "listening")
	stateDraining                    // asked to stop
)

// worker is the parent's record of one worker process. Only the supervisor
// goroutine touches it, except the fields its watch goroutine sets before
// publishing the exit.
type worker struct {
	id, gen int
	cmd     *exec.Cmd
	conn    *wire.Conn
	state   workerState
	started time.Time
	readyAt time.Time
	addr    string
	failErr error       // the cause the worker reported (TypeFailed)
	timer   *time.Timer // ready or stop deadline
	asked   bool        // the parent asked it to stop

	// set by watch before the worker is sent on supervisor.exits
	waitErr error
	recvErr error
}

func (w *worker) pid() int { return w.cmd.Process.Pid }

func (w *worker) attrs() []any {
	return []any{"worker", w.id, "pid", w.pid(), "gen", w.gen}
}

// slot is one place for a worker: its id, the parent's copy of its socket,
// and the worker serving in it.
type slot struct {
	id       int
	fd       int     // the parent's descriptor of the slot's listening socket
	cur      *worker // the serving generation's worker
	next     *worker // the reload candidate
	failures int     // consecutive failed starts or crashes
	respawn  *time.Timer
}

type frameEvent struct {
	w *worker
	f wire.Frame
}

type supervisor struct {
	cfg  Config
	log  *slog.Logger
	exe  string
	args []string
	env  []string

	slots   []*slot
	fds     []int // every listening descriptor the parent holds (inherit mode: one)
	workers map[*worker]struct{}
	gen     int // the serving generation
	lastGen int // the highest generation started; numbers are never reused

	ready      bool  // every first worker has been ready once
	stopping   bool  // draining for exit
	fast       bool  // killing for exit
	result     error // what Run returns
	interrupts int   // SIGINTs seen while stopping

	reloading    *reloadState
	reloadAgain  []chan error // callers waiting for the coalesced next reload
	againPending bool

	frames chan frameEvent
	exits  chan *worker
	calls  chan func()
	done   chan struct{} // closed when the supervisor returns
	spawn  *spawner
}

type reloadState struct {
	gen     int
	waiters []chan error
}

func runParent(cfg Config, stop <-chan stopReq, reload <-chan reloadCall) error {
	s, err := newSupervisor(cfg)
	if err != nil {
		return err
	}
	var g run.Group
	g.Add(func() error { return s.run(stop, reload) }, func(error) { s.interrupt() })
	g.Add(signals.Handler(context.Background(), func(sig os.Signal, a signals.Action) {
		s.call(func() { s.onSignal(sig, a) })
	}))
	return g.Run()
}

func newSupervisor(cfg Config) (*supervisor, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("prefork: cannot find the executable to start workers: %w", err)
	}
	s := &supervisor{
		cfg:     cfg,
		log:     cfg.Logger,
		exe:     exe,
		args:    os.Args,
		env:     workerBaseEnv(cfg.Workers),
		workers: make(map[*worker]struct{}),
		frames:  make(chan frameEvent),
		exits:   make(chan *worker),
		calls:   make(chan func()),
		done:    make(chan struct{}),
	}
	mode := cfg.Mode
	if mode == ModeAuto {
		mode = ModeInherit
		if reuseport.Supported() {
			mode = ModeReusePort
		}
	} else if mode == ModeReusePort && !reuseport.Supported() {
		return nil, fmt.Errorf("prefork: mode reuseport: the kernel does not balance SO_REUSEPORT sockets here (use auto or inherit): %w", errors.ErrUnsupported)
	}
	if err := s.bind(mode); err != nil {
		s.closeFDs()
		return nil, err
	}
	s.log.Info("listening", "addr", s.addrString(), "mode", mode.String(), "workers", cfg.Workers)
	return s, nil
}

// bind opens the listening sockets: one per slot in reuseport mode, one for
// all in inherit mode. The parent keeps them open for as long as their slot
// exists, so that the connections queued on a slot's socket survive the
// worker serving it (a crash, a reload); it never accepts from them.
func (s *supervisor) bind(mode Mode) error {
	addr := s.cfg.Addr
	ctx := context.Background()
	for i := range s.cfg.Workers {
		var fd int
		if mode == ModeInherit && i > 0 {
			fd = s.fds[0]
		} else {
			var ln *net.TCPListener
			var err error
			if mode == ModeReusePort {
				ln, err = reuseport.Listen(ctx, s.cfg.Network, addr)
			} else {
				var l net.Listener
				l, err = new(net.ListenConfig).Listen(ctx, s.cfg.Network, addr)
				if err == nil {
					ln = l.(*net.TCPListener)
				}
			}
			if err != nil {
				return fmt.Errorf("prefork: %w", err)
			}
			// Port 0 resolves once; every further slot binds the same port.
			addr = ln.Addr().String()
			fd, err = rawDup(ln)
			ln.Close() // the parent's netpoller must not watch a serving socket
			if err != nil {
				return fmt.Errorf("prefork: %w", err)
			}
			s.fds = append(s.fds, fd)
		}
		s.slots = append(s.slots, &slot{id: i + 1, fd: fd})
	}
	return nil
}

func (s *supervisor) addrString() string {
	sa, err := unix.Getsockname(s.fds[0])
	if err != nil {
		return s.cfg.Addr
	}
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return net.JoinHostPort(net.IP(a.Addr[:]).String(), strconv.Itoa(a.Port))
	case *unix.SockaddrInet6:
		return net.JoinHostPort(net.IP(a.Addr[:]).String(), strconv.Itoa(a.Port))
	}
	return s.cfg.Addr
}

func (s *supervisor) closeFDs() {
	for _, fd := range s.fds {
		unix.Close(fd)
	}
	s.fds = nil
}

// rawDup duplicates a socket's descriptor close-on-exec, without File():
// File() would put the shared socket in blocking mode.
func rawDup(c syscall.Conn) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	var dupErr error
	err = rc.Control(func(s uintptr) {
		fd, dupErr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0)
	})
	if err == nil && dupErr != nil {
		err = os.NewSyscallError("fcntl", dupErr)
	}
	return fd, err
}

// workerBaseEnv is the parent's environment without the worker variables
// (a parent may itself have been started by a worker's code, or by hand),
// and with GOMAXPROCS = CPUs / workers unless the user set GOMAXPROCS:
// N workers each running one P per CPU were measured 2-13% slower than one
// process; CPUs / N each made them 1-4% faster.
func workerBaseEnv(workers int) []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if name != envWorker && name != envGeneration && name != envParent {
			env = append(env, kv)
		}
	}
	if _, set := os.LookupEnv("GOMAXPROCS"); !set {
		env = append(env, "GOMAXPROCS="+strconv.Itoa(max(1, runtime.NumCPU()/workers)))
	}
	return env
}

// call runs f on the supervisor goroutine, unless it has returned.
func (s *supervisor) call(f func()) {
	select {
	case s.calls <- f:
	case <-s.done:
	}
}

// after runs f on the supervisor goroutine after d.
func (s *supervisor) after(d time.Duration, f func()) *time.Timer {
	return time.AfterFunc(d, func() { s.call(f) })
}

func (s *supervisor) interrupt() {
	s.call(func() { s.stop(true) })
}

// run is the supervisor's loop: every state change happens here.
func (s *supervisor) run(stop <-chan stopReq, reload <-chan reloadCall) error {
	defer close(s.done)
	defer s.closeFDs()
	s.spawn = startSpawner()
	defer s.spawn.stop()

	s.gen, s.lastGen = 1, 1
	for _, sl := range s.slots {
		s.start(sl, s.gen)
	}
	for len(s.workers) > 0 || !s.stopping {
		select {
		case ev := <-s.frames:
			s.onFrame(ev.w, ev.f)
		case w := <-s.exits:
			s.onExit(w)
		case f := <-s.calls:
			f()
		case req := <-stop:
			if s.result == nil {
				s.result = ErrServerClosed
			}
			s.stop(req.fast)
		case call := <-reload:
			s.startReload(call.done)
		}
	}
	for _, sl := range s.slots {
		if sl.respawn != nil {
			sl.respawn.Stop()
		}
	}
	s.finishReload(ErrServerClosed)
	return s.result
}

// start spawns a worker for sl in generation gen.
func (s *supervisor) start(sl *slot, gen int) *worker {
	w, err := s.spawnWorker(sl, gen)
	if err != nil {
		// Could not even start the process (fork failed, executable
		// gone): a failure like any other, without a process to wait for.
		s.log.Error("cannot start worker", "worker", sl.id, "gen", gen, "err", err)
		we := &WorkerError{ID: sl.id, Gen: gen, Err: err}
		if !s.ready {
			s.fail(we)
		} else if s.reloading != nil && gen == s.reloading.gen {
			s.abortReload(we)
		} else {
			s.scheduleRespawn(sl)
		}
		return nil
	}
	s.workers[w] = struct{}{}
	w.timer = s.after(s.cfg.ReadyTimeout, func() { s.onReadyTimeout(w) })
	go s.watch(w)
	return w
}

func (s *supervisor) spawnWorker(sl *slot, gen int) (*worker, error) {
	parentEnd, childEnd, err := wire.Pair()
	if err != nil {
		return nil, err
	}
	defer childEnd.Close()
	lnfd, err := unix.FcntlInt(uintptr(sl.fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		parentEnd.Close()
		return nil, os.NewSyscallError("fcntl", err)
	}
	// A transient *os.File for ExtraFiles: created from a non-blocking
	// descriptor it stays non-blocking, and it is closed right after the
	// start, so the parent's netpoller does not keep watching the socket.
	lnFile := os.NewFile(uintptr(lnfd), "forkline-listener-"+strconv.Itoa(sl.id))
	defer lnFile.Close()

	cmd := &exec.Cmd{
		Path:   s.exe,
		Args:   s.args,
		Stdout: os.Stdout,
		Stderr: os.Stderr,
		Env: append(s.env[:len(s.env):len(s.env)],
			envWorker+"="+strconv.Itoa(sl.id),
			envGeneration+"="+strconv.Itoa(gen),
			envParent+"="+strconv.Itoa(os.Getpid()),
		),
		ExtraFiles:  []*os.File{childEnd, lnFile}, // fd 3: channel, fd 4: listener
		SysProcAttr: sysProcAttr(),
	}
	if err := s.spawn.start(cmd); err != nil {
		parentEnd.Close()
		return nil, err
	}
	conn, err := wire.NewConn(parentEnd, wire.Options{})
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, err
	}
	w := &worker{id: sl.id, gen: gen, cmd: cmd, conn: conn, started: time.Now()}
	s.log.Debug("fork", w.attrs()...)
	if s.reloading != nil && gen == s.reloading.gen {
		sl.next = w
	} else {
		sl.cur = w
	}
	return w, nil
}

// watch is the one goroutine that waits for w's process. It reads w's
// channel until it closes, reaps the process, and publishes the exit.
func (s *supervisor) watch(w *worker) {
	recvDone := make(chan struct{})
	go func() {
		defer close(recvDone)
		for {
			f, err := w.conn.Recv()
			if err != nil {
				w.recvErr = err
				return
			}
			s.frames <- frameEvent{w, f}
		}
	}()
	w.waitErr = w.cmd.Wait()
	// The channel reaches EOF when the process is gone, unless a
	// descendant holds the worker's end: then cut it.
	t := time.AfterFunc(time.Second, func() { w.conn.Close() })
	<-recvDone
	t.Stop()
	w.conn.Close()
	s.exits <- w
}

func (s *supervisor) onFrame(w *worker, f wire.Frame) {
	for _, fd := range f.FDs {
		unix.Close(fd) // no control frame from a worker carries descriptors yet
	}
	switch f.Type {
	case wire.TypeHello:
		if w.state == stateStarting {
			w.state = stateOnline
		}
		s.log.Debug("online", w.attrs()...)
	case wire.TypeReady:
		s.onReady(w, string(f.Payload))
	case wire.TypeFailed:
		w.failErr = errors.New(string(f.Payload))
	default:
		s.log.Warn("unexpected frame from worker", append(w.attrs(), "type", f.Type.String())...)
	}
}

func (s *supervisor) onReady(w *worker, addr string) {
	if w.state == stateDraining {
		return
	}
	w.state = stateReady
	w.readyAt = time.Now()
	w.addr = addr
	w.timer.Stop()
	s.log.Debug("listening", append(w.attrs(), "addr", addr)...)
	if !s.ready {
		for _, sl := range s.slots {
			if sl.cur == nil || sl.cur.state != stateReady {
				return
			}
		}
		s.ready = true
		s.log.Info("cluster ready", "workers", len(s.slots), "gen", s.gen, "addr", s.addrString())
		s.startPendingReload()
		return
	}
	if r := s.reloading; r != nil && w.gen == r.gen {
		s.maybeFinishReload()
	}
}

func (s *supervisor) onReadyTimeout(w *worker) {
	if _, live := s.workers[w]; !live || w.state == stateReady || w.state == stateDraining {
		return
	}
	w.failErr = fmt.Errorf("not ready within %v", s.cfg.ReadyTimeout)
	s.log.Error("worker not ready in time, killing it", append(w.attrs(), "timeout", s.cfg.ReadyTimeout)...)
	w.cmd.Process.Kill()
}

func (s *supervisor) onExit(w *worker) {
	delete(s.workers, w)
	if w.timer != nil {
		w.timer.Stop()
	}
	attrs := append(w.attrs(), "status", exitStatus(w.waitErr))
	if w.recvErr != nil && !isClosed(w.recvErr) {
		attrs = append(attrs, "err", w.recvErr)
	}
	sl := s.slots[w.id-1]
	if w.asked || s.stopping {
		s.log.Debug("exit", attrs...)
		if sl.cur == w {
			sl.cur = nil
		}
		if sl.next == w {
			sl.next = nil
		}
		return
	}
	cause := w.failErr
	if cause == nil && w.recvErr != nil && !isClosed(w.recvErr) {
		cause = w.recvErr
	}
	if cause == nil {
		if w.state == stateReady {
			cause = fmt.Errorf("exited: %s", exitStatus(w.waitErr))
		} else {
			cause = fmt.Errorf("exited before it was ready: %s", exitStatus(w.waitErr))
		}
	}
	we := &WorkerError{ID: w.id, Gen: w.gen, PID: w.pid(), Err: cause}
	switch {
	case sl.next == w:
		sl.next = nil
		s.log.Error("new worker failed during reload", append(attrs, "err", cause)...)
		s.abortReload(we)
	case sl.cur == w:
		sl.cur = nil
		if !s.ready {
			s.log.Error("worker failed at start", append(attrs, "err", cause)...)
			s.fail(we)
			return
		}
		s.log.Warn("worker died, replacing it", append(attrs, "err", cause)...)
		if w.state == stateReady && time.Since(w.readyAt) >= stableAfter {
			sl.failures = 0
		}
		s.scheduleRespawn(sl)
	default:
		s.log.Debug("exit", attrs...)
	}
}

func (s *supervisor) scheduleRespawn(sl *slot) {
	sl.failures++
	delay := backoff(sl.failures)
	if delay == 0 {
		s.start(sl, s.gen)
		return
	}
	s.log.Warn("backing off before replacing worker", "worker", sl.id, "failures", sl.failures, "delay", delay)
	sl.respawn = s.after(delay, func() {
		sl.respawn = nil
		if !s.stopping && sl.cur == nil {
			s.start(sl, s.gen)
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

// fail stops the cluster because it cannot serve; Run returns err.
func (s *supervisor) fail(err error) {
	if s.result == nil {
		s.result = err
	}
	s.stop(true)
}

// stop drains (fast: kills) every worker; the loop ends when all are gone.
func (s *supervisor) stop(fast bool) {
	if s.stopping && (s.fast || !fast) {
		return
	}
	if !s.stopping {
		s.log.Info("stopping", "workers", len(s.workers), "fast", fast)
		// Close the parent's copies first: each worker's own copy is then
		// the last, and it accepts until the moment it closes it.
		s.closeFDs()
	}
	s.stopping = true
	s.fast = s.fast || fast
	for w := range s.workers {
		if fast {
			w.asked = true
			w.cmd.Process.Kill()
		} else {
			s.drain(w)
		}
	}
}

// drain asks w to stop accepting, finish and exit, and kills it after
// StopTimeout.
func (s *supervisor) drain(w *worker) {
	if w.state == stateDraining {
		return
	}
	w.asked = true
	w.state = stateDraining
	if w.timer != nil {
		w.timer.Stop()
	}
	if err := w.conn.Send(&wire.Frame{Type: wire.TypeDrain, To: uint32(w.id)}); err != nil {
		s.log.Warn("cannot ask worker to drain, killing it", append(w.attrs(), "err", err)...)
		w.cmd.Process.Kill()
		return
	}
	w.timer = s.after(s.cfg.StopTimeout, func() {
		if _, live := s.workers[w]; live {
			s.log.Warn("worker still running after stop timeout, killing it", append(w.attrs(), "timeout", s.cfg.StopTimeout)...)
			w.cmd.Process.Kill()
		}
	})
}

func (s *supervisor) onSignal(sig os.Signal, a signals.Action) {
	s.log.Info("signal", "signal", sig.String(), "action", a.String())
	switch a {
	case signals.Stop:
		if s.stopping && sig == os.Interrupt {
			s.interrupts++
		}
		if s.interrupts > 0 {
			s.stop(true) // a second ^C: stop at once
			return
		}
		s.stop(false)
	case signals.Quit:
		s.stop(true)
	case signals.Reload:
		s.startReload(nil)
	default:
		s.log.Warn("signal not handled yet", "signal", sig.String(), "action", a.String())
	}
}

// startReload begins a reload, or queues one behind the running reload.
// done, if not nil, receives the outcome.
func (s *supervisor) startReload(done chan error) {
	if s.stopping {
		if done != nil {
			done <- ErrServerClosed
		}
		return
	}
	if s.reloading != nil || !s.ready {
		// Coalesce: every request during a reload folds into one more.
		s.againPending = true
		if done != nil {
			s.reloadAgain = append(s.reloadAgain, done)
		}
		return
	}
	s.lastGen++
	r := &reloadState{gen: s.lastGen}
	if done != nil {
		r.waiters = append(r.waiters, done)
	}
	s.reloading = r
	s.log.Info("reloading", "gen", r.gen, "exe", s.exe)
	// Each new worker has Config.ReadyTimeout to become ready; one that is
	// killed for being late aborts the reload like any failed start.
	for _, sl := range s.slots {
		if s.reloading != r { // a start failed and aborted it
			return
		}
		s.start(sl, r.gen)
	}
}

func (s *supervisor) maybeFinishReload() {
	r := s.reloading
	for _, sl := range s.slots {
		if sl.next == nil || sl.next.state != stateReady {
			return
		}
	}
	for _, sl := range s.slots {
		old := sl.cur
		sl.cur, sl.next = sl.next, nil
		sl.failures = 0
		if old != nil {
			s.drain(old)
		}
	}
	s.gen = r.gen
	s.log.Info("reloaded", "gen", r.gen)
	s.finishReload(nil)
}

// abortReload stops the new generation; the old one keeps serving.
func (s *supervisor) abortReload(err error) {
	if s.reloading == nil {
		return
	}
	s.log.Error("reload failed, the old generation keeps serving", "gen", s.reloading.gen, "err", err)
	for _, sl := range s.slots {
		if w := sl.next; w != nil {
			sl.next = nil
			s.drain(w)
		}
	}
	s.finishReload(err)
}

func (s *supervisor) finishReload(err error) {
	r := s.reloading
	if r == nil {
		for _, done := range s.reloadAgain {
			done <- err
		}
		s.reloadAgain = nil
		return
	}
	s.reloading = nil
	for _, done := range r.waiters {
		done <- err
	}
	s.startPendingReload()
}

// startPendingReload starts the reload that requests coalesced into while
// another reload (or the first start) was running.
func (s *supervisor) startPendingReload() {
	if !s.againPending || s.stopping {
		return
	}
	s.againPending = false
	waiters := s.reloadAgain
	s.reloadAgain = nil
	s.startReload(nil)
	if s.reloading != nil {
		s.reloading.waiters = waiters
		return
	}
	for _, done := range waiters {
		done <- errors.New("prefork: reload could not start")
	}
}

func exitStatus(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

func isClosed(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, wire.ErrClosed) ||
		errors.Is(err, syscall.ECONNRESET)
}
