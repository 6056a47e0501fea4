package prefork

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"

	"github.com/oklog/run"

	"github.com/forkline/forkline/internal/supervisor"
	"github.com/forkline/forkline/internal/worker"
	"github.com/forkline/forkline/reuseport"
	"github.com/forkline/forkline/signals"
)

// runParent runs the supervisor with the signals of package signals, as
// two actors of one run.Group: the supervisor's loop, and the signal
// handler that hands each signal to it.
func (c *Cluster) runParent(cfg Config) error {
	// The parent supervises and relays; the CPUs are the workers'. One P
	// also halves its CPU time per message and its round-trip latency,
	// since its goroutines no longer wake each other across threads.
	if _, set := os.LookupEnv("GOMAXPROCS"); !set && !c.testKeepProcs {
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	}
	inherit, err := inheritMode(cfg.Mode)
	if err != nil {
		return err
	}
	// Signals are taken over first: one sent while the sockets are bound
	// or the workers start waits for the supervisor instead of taking its
	// default action (SIGHUP would end the parent, SIGTTIN stop it).
	var s *supervisor.Supervisor
	ready := make(chan struct{})
	onSignal, stopSignals := signals.Handler(context.Background(), func(sig os.Signal, a signals.Action) {
		<-ready
		s.Signal(sig, a)
	})
	sc := cfg.supervisorConfig(inherit)
	sc.Starter = c.testStarter()
	sc.Command = c.command
	// An upgrade's new parent: the state of the old one, or, when it
	// cannot be read, back to the old executable.
	up, err := supervisor.PendingUpgrade()
	if err != nil {
		close(ready)
		stopSignals(err)
		return up.Rollback(err)
	}
	sc.Upgrade = up
	// Signals that came while an upgrade executed this process, before the
	// handler above ran: the supervisor applies them once it runs.
	sc.EarlySignals = supervisor.TakeEarlySignals()
	sc.WorkerEnv = c.testEnv
	closeManager, err := serviceManager(&sc, cfg.Logger)
	if err != nil {
		close(ready)
		stopSignals(err)
		return err
	}
	defer closeManager()
	cs, err := openControl(c, cfg, up)
	if err != nil {
		close(ready)
		stopSignals(err)
		return err
	}
	if cs != nil {
		sc.CarryFDs = cs.carry
		onEvent := sc.OnEvent
		sc.OnEvent = func(ev supervisor.Event) {
			cs.publish(ev)
			if onEvent != nil {
				onEvent(ev)
			}
		}
	}
	s, err = supervisor.New(sc)
	if err != nil && up != nil {
		// Give the state back before anything else runs: the old
		// executable adopts it (its own control socket included).
		err = up.Rollback(err)
	}
	close(ready)
	if err != nil {
		stopSignals(err)
		if cs != nil {
			cs.ln.Close()
		}
		return err
	}
	up.Adopted()

	defer c.attach(s)()
	var g run.Group
	g.Add(s.Run, func(error) { s.Stop(true) })
	g.Add(onSignal, stopSignals)
	if cs != nil {
		// The socket answers until the cluster has stopped: a stop asked on
		// it streams events to its last worker's exit.
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			if err := cs.serve(ctx); err != nil {
				cfg.Logger.Error("control socket", "err", err)
			}
		}()
		defer func() { cancel(); <-done }()
	}
	return publicErr(g.Run())
}

// inheritMode resolves Config.Mode: whether every slot shares one socket.
func inheritMode(m Mode) (bool, error) {
	switch m {
	case ModeInherit:
		return true, nil
	case ModeReusePort:
		if !reuseport.Supported() {
			return false, fmt.Errorf("prefork: mode reuseport: the kernel does not balance SO_REUSEPORT sockets here (use auto or inherit): %w", errors.ErrUnsupported)
		}
		return false, nil
	}
	return !reuseport.Supported(), nil
}

// runWorker serves fn in this worker until it is drained.
func (c *Cluster) runWorker(cfg Config, fn ServeFunc) error {
	wk, err := worker.Open(cfg.workerConfig())
	if err != nil {
		return err
	}
	defer c.attach(wk)()
	return wk.Serve(worker.ServeFunc(fn), c.stop)
}
