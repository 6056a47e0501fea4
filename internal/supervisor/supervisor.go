// Package supervisor is a forkline parent: it binds the slots' sockets,
// starts workers, replaces those that die, hands slots over to new workers
// (a reload, a recycle), checks their health, scales, relays messages and
// stops. Package prefork is its public face; this package has no API
// promise.
//
// Everything the supervisor decides, it decides on one goroutine, the loop
// in Run; other goroutines (each worker's watch, reader and beat goroutines,
// the callers of the API) hand it what they learn through channels and ask
// it to act through call and do. DESIGN.md draws the picture.
package supervisor

import (
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/forkline/forkline/internal/msg"
	"github.com/forkline/forkline/internal/wire"
	"github.com/forkline/forkline/signals"
)

// phase is where the cluster is in its life.
type phase int

const (
	starting     phase = iota // the first workers start; not every slot has served yet
	serving                   // every slot has served once (Run's first ready)
	stopping                  // every worker drains; the loop ends when all are gone
	stoppingFast              // every worker is killed
)

// Supervisor is a running parent. Create it with New, run it with Run.
type Supervisor struct {
	cfg   Config
	log   *slog.Logger
	start Starter
	eps   []*endpoint // the addresses served, as bound

	// The loop's own state.
	slots   []*slot
	workers map[*worker]struct{}
	phase   phase
	result  error // what Run returns
	gen     int   // the serving generation
	lastGen int   // the highest generation started; numbers are never reused
	sigints int   // SIGINTs while stopping

	upg           *upgrade       // an upgrade of the parent under way (upgrade_linux.go)
	upgradeWanted bool           // an upgrade waits for the running start or handover
	upgradeQueued []chan<- error // and who waits for it
	upgradeSigs   []os.Signal    // signals that came during an upgrade, for the new parent

	ho       *handover // the handover running
	queued   *handover // a reload waiting for its turn: SIGHUPs coalesce into it
	recycles []*slot   // recycles waiting for their turn
	target   int       // workers wanted once the handover ends; 0: none

	resetsQueue bool // closing a socket's last copy resets its queue (tcp_migrate_req=0)

	steering bool  // the endpoints' groups are steered (endpoint.steer)
	steered  []int // the eligible slot indexes written last

	beatClock time.Duration // time the parent ran, as the heartbeats count it
	lastTick  time.Time

	notifyFailed bool      // a message to the manager failed once (logged)
	lastStatus   string    // the STATUS= sent last
	extendUntil  time.Time // the manager's timeout is extended until then, while a stop or reload runs

	routes      atomic.Pointer[map[int]*worker] // serving workers by id, for senders
	routesDirty bool
	relayWait   time.Duration
	dropped     atomic.Int64 // relays dropped since the last log line
	dropLogged  atomic.Int64 // when that line was logged, unix ns
	counts      counters
	reqs        msg.Requests
	resp        msg.Responder
	events      *dispatcher

	frames   chan frame
	exits    chan exitReport
	calls    chan func()
	done     chan struct{} // closed when the loop has ended
	watchers sync.WaitGroup
}

// frame is a control frame a worker's reader hands to the loop.
type frame struct {
	w *worker
	f wire.Frame
}

// New binds the sockets of cfg.Workers slots and returns a supervisor
// ready to Run. A bad address or a port in use fails here, before any
// process starts.
func New(cfg Config) (*Supervisor, error) {
	s := &Supervisor{
		cfg:     cfg,
		log:     cfg.Logger,
		start:   cfg.Starter,
		workers: make(map[*worker]struct{}),
		frames:  make(chan frame),
		exits:   make(chan exitReport),
		calls:   make(chan func()),
		done:    make(chan struct{}),
	}
	if s.cfg.Bind == nil {
		s.cfg.Bind = bind
	}
	if s.cfg.MemoryOf == nil {
		s.cfg.MemoryOf = residentBytes
	}
	// A sender held back by a relay does not read meanwhile: the wait
	// stays well within the heartbeat timeout.
	s.relayWait = maxRelayWait
	if cfg.HeartbeatTimeout > 0 {
		s.relayWait = min(maxRelayWait, cfg.HeartbeatTimeout/4)
	}
	s.resp = msg.Responder{Handler: cfg.OnRequest, Log: s.log}
	if cfg.Upgrade != nil {
		if err := s.checkUpgrade(); err != nil {
			return nil, err
		}
		s.cfg.Inherited = cfg.Upgrade.inherited()
	}
	s.resetsQueue = !cfg.Inherit && migrateOff()
	s.routes.Store(new(map[int]*worker))
	release, err := s.openEndpoints(cfg.Bind == nil)
	if err != nil {
		s.closeSockets()
		return nil, err
	}
	n := cfg.Workers
	if a, ours := s.adoptedSlots(); a > 0 && a != n {
		// As many slots as sockets were given. Those of the fd store were
		// this cluster's: Workers applies once it is ready, and the
		// slots removed leave the store. A socket unit's stay open in the
		// manager: a slot removed would leave its queue unserved.
		s.log.Info("starting with one worker per inherited socket", "workers", a, "configured", n)
		n = a
		if ours {
			s.target = cfg.Workers
		}
	}
	for range n {
		if _, err := s.addSlot(); err != nil {
			release()
			s.closeSockets()
			return nil, err
		}
	}
	release()
	s.storeSockets(s.slots...)
	if err := s.startSteering(); err != nil {
		s.closeSockets()
		return nil, err
	}
	s.storeSteering()
	if s.start == nil && cfg.Command != nil {
		st, err := newCommandStarter(s.log, *cfg.Command, cfg.WorkerProcs, cfg.Addrs, cfg.User, cfg.Group)
		if err != nil {
			s.closeSockets()
			return nil, err
		}
		s.start = st
	}
	if s.start == nil {
		st, err := newExecStarter(s.log, cfg.WorkerProcs, cfg.WorkerEnv, cfg.User, cfg.Group)
		if err != nil {
			s.closeSockets()
			return nil, err
		}
		s.start = st
	}
	mode := "reuseport"
	if s.eps[0].shared >= 0 {
		mode = "inherit"
	}
	s.log.Info("listening", "addr", s.Addr(), "mode", mode, "workers", cfg.Workers, "parent", os.Getpid())
	for _, ep := range s.eps[1:] {
		s.log.Info("listening", "name", ep.Name, "network", ep.Network, "addr", ep.bound)
	}
	return s, nil
}

// Addr returns the address the cluster serves, with port 0 resolved.
func (s *Supervisor) Addr() string { return s.eps[0].bound }

// Run starts the workers and supervises them until Stop, a stop signal or
// a failed start; it returns nil after a stop by signal, ErrClosed after
// Stop, and the cause of a failed start (a *WorkerError). When it returns,
// every worker has been reaped, every socket closed and every event
// delivered. Run may be called once.
func (s *Supervisor) Run() error {
	defer s.closeSteering()
	defer s.closeSockets()
	defer s.start.Close()
	s.events = startDispatcher(s.cfg.OnEvent)
	defer s.events.close()
	defer s.reqs.Fail(ErrClosed)

	s.gen, s.lastGen = 1, 1
	if s.cfg.Upgrade != nil {
		if err := s.resumeUpgrade(); err != nil {
			s.log.Error("adopting the upgrade's workers", "err", err)
			s.fail(err)
		}
	} else {
		for _, sl := range s.slots {
			s.spawn(sl, s.gen, nil)
		}
	}
	for _, sig := range s.cfg.EarlySignals {
		s.onSignal(sig, signals.ActionOf(sig))
	}
	s.startManager()
	if s.cfg.HeartbeatTimeout > 0 {
		s.lastTick = time.Now()
		s.every(s.cfg.HeartbeatInterval, s.heartbeat)
	}
	if !s.cfg.Inherit {
		s.every(queueCheckInterval, s.checkSlots)
	}
	if s.cfg.MaxMemory > 0 {
		if runtime.GOOS != "linux" && s.cfg.MemoryOf == nil {
			s.log.Warn("MaxMemory is not enforced on this platform", "os", runtime.GOOS)
		} else {
			s.every(memoryCheckInterval, s.checkMemory)
		}
	}
	s.loop()
	for _, sl := range s.slots {
		sl.stopRespawn()
	}
	s.endHandovers(ErrClosed)
	// No more calls from here: call and do return at once, so that an
	// OnEvent still running cannot wait on this goroutine.
	close(s.done)
	s.watchers.Wait()
	s.resp.Wait()
	s.log.Info("stopped", "parent", os.Getpid())
	return s.result
}

// loop is the supervisor's select: every decision happens on it.
func (s *Supervisor) loop() {
	for len(s.workers) > 0 || s.phase < stopping {
		select {
		case fr := <-s.frames:
			s.onFrame(fr.w, fr.f)
		case ex := <-s.exits:
			s.onExit(ex.w, ex.exit, ex.recvErr)
		case f := <-s.calls:
			f()
		}
		if s.routesDirty {
			s.publishRoutes()
		}
		s.steerSlots()
		s.reportStatus()
	}
}

// call runs f on the loop, unless the loop has ended.
func (s *Supervisor) call(f func()) {
	select {
	case s.calls <- f:
	case <-s.done:
	}
}

// do runs f on the loop and returns its result, or ErrClosed once the loop
// has ended.
func (s *Supervisor) do(f func() error) error {
	errc := make(chan error, 1)
	select {
	case s.calls <- func() { errc <- f() }:
		return <-errc
	case <-s.done:
		return ErrClosed
	}
}

// after runs f on the loop after d.
func (s *Supervisor) after(d time.Duration, f func()) *time.Timer {
	return time.AfterFunc(d, func() { s.call(f) })
}

// every runs f on the loop every d until the cluster stops.
func (s *Supervisor) every(d time.Duration, f func()) {
	var tick func()
	tick = func() {
		if s.phase >= stopping {
			return
		}
		f()
		s.after(d, tick)
	}
	s.after(d, tick)
}

func (s *Supervisor) emit(ev Event) {
	s.tellManager(ev)
	s.events.emit(ev)
}

// workerEvent emits an event about w in its current state.
func (s *Supervisor) workerEvent(t EventType, w *worker) {
	s.emit(Event{Type: t, Worker: w.info()})
}

// fail stops the cluster because it cannot serve; Run returns err.
func (s *Supervisor) fail(err error) {
	if s.result == nil {
		s.result = err
	}
	s.stopAll(true)
}

// stopAll drains (fast: kills) every worker; the loop ends when all are
// gone. Transitions: starting or serving -> stopping -> stoppingFast.
func (s *Supervisor) stopAll(fast bool) {
	if s.phase == stoppingFast || (s.phase == stopping && !fast) {
		return
	}
	first := s.phase < stopping
	s.phase = stopping
	if fast {
		s.phase = stoppingFast
	}
	if first {
		s.log.Info("stopping", "workers", len(s.workers), "fast", fast, "parent", os.Getpid())
		s.emit(Event{Type: EventStopping, Gen: s.gen})
		// The parent's copies close first: each worker's own copy is
		// then the last, and it accepts until the moment it closes it.
		s.closeSockets()
		s.endHandovers(ErrClosed)
	}
	for w := range s.workers {
		if fast {
			s.kill(w, ending{kind: endAsked, reason: "fast stop"})
		} else {
			s.drain(w, "stop")
		}
	}
}

// formatStatus says how a worker exited, with its panic when it had one.
func formatStatus(ex Exit) string {
	if ex.Crash != "" {
		return fmt.Sprintf("%s: %s", ex.Status, ex.Crash)
	}
	return ex.Status
}
