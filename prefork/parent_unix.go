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
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/oklog/run"
	"golang.org/x/sys/unix"

	"github.com/forkline/forkline/internal/sockfd"
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

// hungKillGrace is how long a worker that failed its heartbeat has between
// SIGTERM and SIGKILL.
const hungKillGrace = time.Second

// memoryCheckInterval is how often MaxMemory is checked.
const memoryCheckInterval = time.Second

// maxRelayWait is how long, at most, the parent holds a message relayed to
// a worker whose queue is full before it drops it (see relaySend).
const maxRelayWait = time.Second

type workerState int

const (
	stateStarting workerState = iota // process started, channel not yet up
	stateOnline                      // channel up (Node's "online")
	stateReady                       // serving (Node's "listening")
	stateDraining                    // asked to stop
)

var stateNames = [...]string{"starting", "online", "listening", "draining"}

// worker is the parent's record of one worker process. The supervisor
// goroutine owns it; its reader and watch goroutines only set the fields
// marked so, and publish them through channels.
type worker struct {
	slot     *slot
	id, gen  int
	pid      int
	restarts int
	cmd      *exec.Cmd
	conn     *wire.Conn
	started  time.Time

	state    workerState
	readyAt  time.Time
	failErr  error       // the cause the worker reported (TypeFailed)
	timer    *time.Timer // ready or stop deadline
	asked    bool        // the parent asked it to stop
	hung     bool        // failed its heartbeat
	recycled bool        // a recycle of it is queued or running
	stopping string      // why it drains on its own (TypeStopping), if it does

	lastPong atomic.Int64 // unix nanoseconds; set by the reader goroutine
	// relayStuck: a relay to it timed out waiting for room (see relaySend)
	relayStuck atomic.Bool

	// set by watch before the worker is sent on supervisor.exits
	waitErr error
	recvErr error
	// set by the supervisor for watch to emit
	exitEvent Event
}

func (w *worker) attrs(more ...any) []any {
	return append([]any{"worker", w.id, "pid", w.pid, "gen", w.gen}, more...)
}

// info describes w in state, for events and snapshots.
func (w *worker) info(state string) WorkerInfo {
	return WorkerInfo{ID: w.id, PID: w.pid, Gen: w.gen, State: state, Started: w.started, Restarts: w.restarts}
}

// slot is one place for a worker: its id, the parent's copy of its socket,
// and the worker serving in it.
type slot struct {
	id       int
	fd       int     // the slot's listening socket (the parent's copy)
	own      bool    // fd is this slot's alone (reuseport mode)
	cur      *worker // the serving worker
	next     *worker // its successor while it starts (reload, recycle)
	failures int     // consecutive failed starts or crashes
	restarts int     // workers started in this slot after crashes
	respawn  *time.Timer
	removed  bool // scaled away
}

// exitEvent hands a reaped worker to the supervisor, which closes done once
// it has handled the exit; then, if set, runs on the supervisor after the
// Exit event has been delivered (the replacement, whose Fork comes after).
type exitEvent struct {
	w    *worker
	done chan struct{}
	then func()
}

type frameEvent struct {
	w    *worker
	f    wire.Frame
	done chan struct{} // closed once the supervisor has handled f
}

type supervisor struct {
	cfg  Config
	log  *slog.Logger
	exe  string
	args []string
	env  []string
	mode Mode
	addr string // the resolved address: port 0 is bound once

	slots    []*slot
	sharedFD int // inherit mode: the one socket
	workers  map[*worker]struct{}
	gen      int // the serving generation
	lastGen  int // the highest generation started; numbers are never reused

	ready      bool  // every first worker has been ready once
	stopping   bool  // draining for exit
	fast       bool  // killing for exit
	result     error // what Run returns
	interrupts int   // SIGINTs seen while stopping

	reloading    *reloadState
	reloadAgain  []chan error // callers waiting for the coalesced next reload
	againPending bool

	recycling    *slot   // the slot whose worker is being replaced
	recycleQueue []*slot // slots waiting for their turn

	routes      atomic.Pointer[map[int]*worker] // serving worker by id, for senders
	routesDirty bool
	relayWait   time.Duration // how long a relay waits for room in a full queue
	dropped     atomic.Int64  // relayed messages dropped since the last log line
	dropLogged  atomic.Int64  // when that line was logged, unix nanoseconds
	reqs        requests
	resp        responder

	frames   chan frameEvent
	exits    chan *exitEvent
	watchers sync.WaitGroup // the watch goroutines
	calls    chan func()
	done     chan struct{} // closed when the supervisor returns
	spawn    *spawner
}

type reloadState struct {
	gen     int
	waiters []chan error
}

func (c *Cluster) runParent(cfg Config) error {
	// The parent supervises and relays; the CPUs are the workers'. One P
	// also halves its CPU time per message and its round-trip latency
	// (measured: 35 -> 14 us of parent CPU, 41 -> 21 us per request round
	// trip), since its goroutines no longer wake each other across threads.
	if _, set := os.LookupEnv("GOMAXPROCS"); !set {
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	}
	// Signals are taken over first: one sent while the sockets are bound or
	// the workers start waits for the supervisor instead of taking its
	// default action (SIGHUP would end the parent, SIGTTIN stop it).
	var s *supervisor
	onSignal, stopSignals := signals.Handler(context.Background(), func(sig os.Signal, a signals.Action) {
		s.call(func() { s.onSignal(sig, a) })
	})
	s, err := newSupervisor(cfg)
	if err != nil {
		stopSignals(err)
		return err
	}
	defer c.attach(s, nil)()
	var g run.Group
	g.Add(func() error { return s.run(c.stop) }, func(error) { s.call(func() { s.stop(true) }) })
	g.Add(onSignal, stopSignals)
	return g.Run()
}

func newSupervisor(cfg Config) (*supervisor, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("prefork: cannot find the executable to start workers: %w", err)
	}
	s := &supervisor{
		cfg:      cfg,
		log:      cfg.Logger,
		exe:      exe,
		args:     os.Args,
		env:      workerBaseEnv(cfg.Workers),
		sharedFD: -1,
		workers:  make(map[*worker]struct{}),
		frames:   make(chan frameEvent),
		exits:    make(chan *exitEvent),
		calls:    make(chan func()),
		done:     make(chan struct{}),
	}
	// A sender held back by a relay does not read its pings meanwhile: the
	// wait stays well within the heartbeat timeout.
	s.relayWait = maxRelayWait
	if cfg.HeartbeatTimeout > 0 {
		s.relayWait = min(maxRelayWait, cfg.HeartbeatTimeout/4)
	}
	s.resp.handler = cfg.OnRequest
	s.routes.Store(new(map[int]*worker))
	s.mode = cfg.Mode
	if s.mode == ModeAuto {
		s.mode = ModeInherit
		if reuseport.Supported() {
			s.mode = ModeReusePort
		}
	} else if s.mode == ModeReusePort && !reuseport.Supported() {
		return nil, fmt.Errorf("prefork: mode reuseport: the kernel does not balance SO_REUSEPORT sockets here (use auto or inherit): %w", errors.ErrUnsupported)
	}
	s.addr = cfg.Addr
	for range cfg.Workers {
		if _, err := s.addSlot(); err != nil {
			s.closeFDs()
			return nil, err
		}
	}
	if cfg.MaxMemory > 0 && runtime.GOOS != "linux" {
		s.log.Warn("MaxMemory is not enforced on this platform", "os", runtime.GOOS)
	}
	s.log.Info("listening", "addr", s.addr, "mode", s.mode.String(), "workers", cfg.Workers)
	return s, nil
}

// addSlot appends a slot with its socket: a new SO_REUSEPORT socket in
// reuseport mode, the one shared socket in inherit mode. The parent keeps
// every socket open for as long as its slot exists, so that connections
// queued on it survive the worker serving it (a crash, a reload); it never
// accepts from them.
func (s *supervisor) addSlot() (*slot, error) {
	sl := &slot{id: len(s.slots) + 1}
	if s.mode == ModeInherit && s.sharedFD >= 0 {
		sl.fd = s.sharedFD
	} else {
		fd, err := s.bind()
		if err != nil {
			return nil, err
		}
		sl.fd = fd
		if s.mode == ModeInherit {
			s.sharedFD = fd
		} else {
			sl.own = true
		}
	}
	s.slots = append(s.slots, sl)
	return sl, nil
}

// bind opens one listening socket on s.addr and returns the parent's raw
// descriptor of it. The first bind resolves port 0 for all later ones.
func (s *supervisor) bind() (int, error) {
	// Plain TCP, not Multipath TCP (Go's default for listeners on Linux
	// since 1.24): a worker rebuilds the listener from a descriptor and
	// cannot know it is MPTCP, and every connection of an MPTCP listener
	// from an ordinary client is a fallback socket; measured here, a worker
	// served 15-20% fewer requests per second on one than on plain TCP.
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	if s.mode == ModeReusePort {
		lc.Control = reuseport.Control
	}
	l, err := lc.Listen(context.Background(), s.cfg.Network, s.addr)
	var ln *net.TCPListener
	if err == nil {
		ln = l.(*net.TCPListener)
	}
	if err != nil {
		return -1, fmt.Errorf("prefork: %w", err)
	}
	s.addr = ln.Addr().String()
	fd, err := sockfd.DupFD(ln)
	// The *net.TCPListener goes: the parent's netpoller must not wake for
	// every connection on a socket that only workers accept from.
	ln.Close()
	if err != nil {
		return -1, fmt.Errorf("prefork: %w", err)
	}
	return fd, nil
}

func (s *supervisor) closeFDs() {
	for _, sl := range s.slots {
		if sl.own && sl.fd >= 0 {
			unix.Close(sl.fd)
			sl.fd = -1
		}
	}
	if s.sharedFD >= 0 {
		unix.Close(s.sharedFD)
		s.sharedFD = -1
	}
}

// workerBaseEnv is the parent's environment without the worker variables
// (a parent may itself have been started by a worker's code, or by hand),
// and with GOMAXPROCS = available CPUs / workers unless the user set
// GOMAXPROCS:
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
		env = append(env, "GOMAXPROCS="+strconv.Itoa(max(1, availableCPUs()/workers)))
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

// do runs f on the supervisor goroutine and returns its result, or
// ErrServerClosed if the supervisor has returned.
func (s *supervisor) do(f func() error) error {
	errc := make(chan error, 1)
	select {
	case s.calls <- func() { errc <- f() }:
		return <-errc
	case <-s.done:
		return ErrServerClosed
	}
}

// after runs f on the supervisor goroutine after d.
func (s *supervisor) after(d time.Duration, f func()) *time.Timer {
	return time.AfterFunc(d, func() { s.call(f) })
}

// every runs f on the supervisor goroutine every d until it returns.
func (s *supervisor) every(d time.Duration, f func()) {
	var tick func()
	tick = func() {
		f()
		if !s.stopping {
			s.after(d, tick)
		}
	}
	s.after(d, tick)
}

// run is the supervisor's loop: every state change happens here.
func (s *supervisor) run(stop <-chan stopReq) error {
	defer s.closeFDs()
	s.spawn = startSpawner()
	defer s.spawn.stop()
	defer s.reqs.fail(ErrServerClosed)

	s.gen, s.lastGen = 1, 1
	for _, sl := range s.slots {
		s.start(sl, s.gen, false)
	}
	s.publishRoutes()
	if s.cfg.HeartbeatTimeout > 0 {
		s.every(s.cfg.HeartbeatInterval, s.heartbeat)
	}
	if s.cfg.MaxMemory > 0 && runtime.GOOS == "linux" {
		s.every(memoryCheckInterval, s.checkMemory)
	}
	for len(s.workers) > 0 || !s.stopping {
		select {
		case ev := <-s.frames:
			s.onFrame(ev.w, ev.f)
			close(ev.done)
		case ev := <-s.exits:
			ev.then = s.onExit(ev.w)
			close(ev.done)
		case f := <-s.calls:
			f()
		case req := <-stop:
			if s.result == nil {
				s.result = ErrServerClosed
			}
			s.stop(req.fast)
		}
		if s.routesDirty {
			s.publishRoutes()
		}
	}
	for _, sl := range s.slots {
		if sl.respawn != nil {
			sl.respawn.Stop()
		}
	}
	s.finishReload(ErrServerClosed)
	// No more calls: from here on call and do return at once, so that an
	// OnEvent still running (a last Exit) cannot wait on this goroutine.
	close(s.done)
	s.watchers.Wait()
	s.resp.wg.Wait()
	return s.result
}

// start spawns a worker for sl in generation gen: as the slot's serving
// worker, or as its successor (next) that takes over once ready.
func (s *supervisor) start(sl *slot, gen int, next bool) *worker {
	w, err := s.spawnWorker(sl, gen)
	if err != nil {
		// Could not even start the process (fork failed, executable
		// gone): a failure like any other, without a process to wait for.
		s.log.Error("cannot start worker", "worker", sl.id, "gen", gen, "err", err)
		we := &WorkerError{ID: sl.id, Gen: gen, Err: err}
		switch {
		case !s.ready:
			s.fail(we)
		case next && s.reloading != nil:
			s.abortReload(we)
		case next:
			s.endRecycle(sl, we)
		default:
			s.scheduleRespawn(sl)
		}
		return nil
	}
	if next {
		sl.next = w
	} else {
		sl.cur = w
	}
	s.routesDirty = true
	s.workers[w] = struct{}{}
	w.timer = s.after(s.cfg.ReadyTimeout, func() { s.onReadyTimeout(w) })
	s.watchers.Go(func() { s.watch(w) })
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
	conn, err := wire.NewConn(parentEnd, wire.Options{MaxPayload: s.cfg.MaxMessageSize})
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, err
	}
	w := &worker{slot: sl, id: sl.id, gen: gen, pid: cmd.Process.Pid, restarts: sl.restarts, cmd: cmd, conn: conn, started: time.Now()}
	w.lastPong.Store(w.started.UnixNano())
	s.log.Debug("fork", w.attrs()...)
	return w, nil
}

// watch is the one goroutine that waits for w's process. It reads w's
// channel until it closes, reaps the process, and publishes the exit.
func (s *supervisor) watch(w *worker) {
	s.emit(Event{Type: EventFork, Worker: w.info("starting")})
	recvDone := make(chan struct{})
	go func() {
		defer close(recvDone)
		for {
			f, err := w.conn.Recv()
			if err == nil {
				err = s.onWorkerFrame(w, f)
			}
			if err != nil {
				w.recvErr = err
				if !isClosed(err) {
					// A broken channel: this worker cannot be trusted
					// to follow the protocol; it is replaced.
					s.log.Error("bad frame from worker, replacing it", w.attrs("err", err)...)
					w.cmd.Process.Kill()
				}
				return
			}
		}
	}()
	w.waitErr = w.cmd.Wait()
	// The channel reaches EOF when the process is gone, unless a
	// descendant holds the worker's end: then cut it.
	t := time.AfterFunc(time.Second, func() { w.conn.Close() })
	<-recvDone
	t.Stop()
	w.conn.Close()
	s.emit(Event{Type: EventDisconnect, Worker: w.info("disconnected")})
	ev := &exitEvent{w: w, done: make(chan struct{})}
	s.exits <- ev
	<-ev.done
	s.emit(w.exitEvent)
	if ev.then != nil {
		s.call(ev.then)
	}
}

// onWorkerFrame handles a frame from w on w's reader goroutine: user
// traffic is routed from here, control frames go to the supervisor.
func (s *supervisor) onWorkerFrame(w *worker, f wire.Frame) error {
	switch {
	case f.Type >= wire.TypeUser:
		s.route(w, f)
		return nil
	case f.Type == wire.TypePong:
		w.lastPong.Store(time.Now().UnixNano())
		return nil
	case f.Type == wire.TypeHello, f.Type == wire.TypeReady, f.Type == wire.TypeFailed, f.Type == wire.TypeRecycle,
		f.Type == wire.TypeStopping:
	case !f.Type.Known():
		// From a worker of a newer binary, which a reload runs under this
		// parent: what this version does not know, it ignores.
		closeFDs(f.FDs)
		s.log.Debug("control frame of an unknown type ignored", w.attrs("type", f.Type.String())...)
		return nil
	default:
		closeFDs(f.FDs)
		return fmt.Errorf("%w: worker sent control frame %v, which only the parent sends", wire.ErrMalformed, f.Type)
	}
	closeFDs(f.FDs)
	// Hand the frame to the supervisor and wait until it is handled, so
	// that the event below, the supervisor's state (Workers) and the
	// worker's later messages come in that order.
	done := make(chan struct{})
	select {
	case s.frames <- frameEvent{w, f, done}:
		<-done
	case <-s.done:
		return nil
	}
	switch f.Type {
	case wire.TypeHello:
		s.emit(Event{Type: EventOnline, Worker: w.info("online")})
	case wire.TypeReady:
		s.emit(Event{Type: EventListening, Worker: w.info("listening"), Addr: string(f.Payload)})
	}
	return nil
}

func (s *supervisor) onFrame(w *worker, f wire.Frame) {
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
	case wire.TypeRecycle:
		s.requestRecycle(w, "MaxRequests reached")
	case wire.TypeStopping:
		w.stopping = string(f.Payload[:min(len(f.Payload), 64)])
	}
}

func (s *supervisor) onReady(w *worker, addr string) {
	if w.state == stateDraining {
		return
	}
	w.state = stateReady
	w.readyAt = time.Now()
	w.lastPong.Store(w.readyAt.UnixNano()) // heartbeats count from here
	w.timer.Stop()
	s.log.Debug("listening", w.attrs("addr", addr)...)
	sl := w.slot
	switch {
	case !s.ready:
		for _, sl := range s.slots {
			if sl.cur == nil || sl.cur.state != stateReady {
				return
			}
		}
		s.ready = true
		s.log.Info("cluster ready", "workers", len(s.slots), "gen", s.gen, "addr", s.addr)
		s.startPendingReload()
	case s.reloading != nil && w.gen == s.reloading.gen:
		s.maybeFinishReload()
	case sl.next == w: // a recycle's successor
		old := sl.cur
		sl.cur, sl.next = w, nil
		s.routesDirty = true
		if old != nil {
			s.drain(old)
		}
		s.log.Info("recycled", w.attrs()...)
		s.endRecycle(sl, nil)
	}
}

func (s *supervisor) onReadyTimeout(w *worker) {
	if _, live := s.workers[w]; !live || w.state == stateReady || w.state == stateDraining {
		return
	}
	w.failErr = fmt.Errorf("not ready within %v", s.cfg.ReadyTimeout)
	s.log.Error("worker not ready in time, killing it", w.attrs("timeout", s.cfg.ReadyTimeout)...)
	w.cmd.Process.Kill()
}

// onExit handles w's exit; what it returns runs once the Exit event has
// been delivered.
func (s *supervisor) onExit(w *worker) (then func()) {
	delete(s.workers, w)
	if w.timer != nil {
		w.timer.Stop()
	}
	sl := w.slot
	wasCur, wasNext := sl.cur == w, sl.next == w
	if wasCur {
		sl.cur = nil
		s.routesDirty = true
	}
	if wasNext {
		sl.next = nil
	}
	ev := Event{Type: EventExit, Worker: w.info("dead"), Asked: w.asked, ExitCode: -1}
	if ps := w.cmd.ProcessState; ps != nil {
		ev.ExitCode = ps.ExitCode()
		if st, ok := ps.Sys().(syscall.WaitStatus); ok && st.Signaled() {
			ev.Signal = st.Signal()
		}
	}
	attrs := w.attrs("status", exitStatus(w.waitErr))
	if w.asked || s.stopping || sl.removed {
		s.log.Debug("exit", attrs...)
		w.exitEvent = ev
		return nil
	}
	cause := w.failErr
	if cause == nil && w.recvErr != nil && !isClosed(w.recvErr) {
		cause = w.recvErr
	}
	if cause == nil && w.hung {
		cause = fmt.Errorf("no heartbeat for %v", s.cfg.HeartbeatTimeout)
	}
	stoppedOnItsOwn := cause == nil && w.stopping != "" && w.waitErr == nil
	if stoppedOnItsOwn {
		cause = fmt.Errorf("stopped on %s", w.stopping)
	}
	if cause == nil {
		if w.state == stateReady {
			cause = fmt.Errorf("exited: %s", exitStatus(w.waitErr))
		} else {
			cause = fmt.Errorf("exited before it was ready: %s", exitStatus(w.waitErr))
		}
	}
	ev.Err = &WorkerError{ID: w.id, Gen: w.gen, PID: w.pid, Err: cause}
	w.exitEvent = ev
	switch {
	case wasNext && s.reloading != nil && w.gen == s.reloading.gen:
		s.log.Error("new worker failed during reload", w.attrs("status", exitStatus(w.waitErr), "err", cause)...)
		s.abortReload(ev.Err)
	case wasNext:
		s.log.Error("replacement worker failed, the old one keeps serving", w.attrs("err", cause)...)
		s.endRecycle(sl, ev.Err)
	case wasCur:
		if !s.ready {
			s.log.Error("worker failed at start", w.attrs("status", exitStatus(w.waitErr), "err", cause)...)
			s.fail(ev.Err)
			return nil
		}
		if stoppedOnItsOwn {
			// An operator's kill, Kill, or systemd signalling the whole
			// cgroup just before the parent: a drain, not a crash.
			s.log.Info("worker stopped on a signal, replacing it", w.attrs("err", cause)...)
		} else {
			s.log.Warn("worker died, replacing it", w.attrs("status", exitStatus(w.waitErr), "err", cause)...)
		}
		if w.state == stateReady && time.Since(w.readyAt) >= stableAfter {
			sl.failures = 0
		}
		sl.restarts++
		return func() {
			if !s.stopping && !sl.removed && sl.cur == nil {
				s.scheduleRespawn(sl)
			}
		}
	default:
		s.log.Debug("exit", attrs...)
	}
	return nil
}

func (s *supervisor) scheduleRespawn(sl *slot) {
	sl.failures++
	delay := backoff(sl.failures)
	if delay == 0 {
		s.start(sl, s.gen, false)
		return
	}
	s.log.Warn("backing off before replacing worker", "worker", sl.id, "failures", sl.failures, "delay", delay)
	sl.respawn = s.after(delay, func() {
		sl.respawn = nil
		if !s.stopping && !sl.removed && sl.cur == nil {
			s.start(sl, s.gen, false)
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
	if err := w.conn.SendControl(&wire.Frame{Type: wire.TypeDrain, To: uint32(w.id)}); err != nil {
		// The channel is gone; SIGTERM drains a worker as well.
		s.log.Warn("cannot ask worker to drain over its channel, sending SIGTERM", w.attrs("err", err)...)
		w.cmd.Process.Signal(syscall.SIGTERM)
	}
	w.timer = s.after(s.cfg.StopTimeout, func() {
		if _, live := s.workers[w]; live {
			s.log.Warn("worker still running after stop timeout, killing it", w.attrs("timeout", s.cfg.StopTimeout)...)
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
	case signals.ScaleUp, signals.ScaleDown:
		n := len(s.slots) + 1
		if a == signals.ScaleDown {
			n = len(s.slots) - 1
		}
		if err := s.scale(n); err != nil {
			s.log.Warn("cannot scale", "signal", sig.String(), "err", err)
		}
	}
}

func (s *supervisor) emit(ev Event) {
	if s.cfg.OnEvent != nil {
		s.cfg.OnEvent(ev)
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
