package supervisor

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"syscall"

	"github.com/forkline/forkline/internal/msg"
	"github.com/forkline/forkline/internal/wire"
	"github.com/forkline/forkline/signals"
)

// The supervisor's methods for other goroutines: each hands its work to the
// loop (call, do) or reads what the loop published (routes). All are safe
// for concurrent use, and fail with ErrClosed once Run has returned.

// Stop stops the cluster: gracefully (every worker drains) or fast (every
// worker is killed). Run then returns ErrClosed, unless it had a result.
func (s *Supervisor) Stop(fast bool) {
	s.call(func() {
		if s.result == nil {
			s.result = ErrClosed
		}
		s.stopAll(fast)
	})
}

// Terminate stops the cluster gracefully, as SIGTERM does: Run then
// returns nil (the control socket's stop).
func (s *Supervisor) Terminate() {
	s.call(func() { s.stopAll(false) })
}

// Signal applies a signal's action (package signals) to the cluster.
func (s *Supervisor) Signal(sig os.Signal, a signals.Action) {
	s.call(func() { s.onSignal(sig, a) })
}

func (s *Supervisor) onSignal(sig os.Signal, a signals.Action) {
	s.log.Info("signal", "signal", signals.Name(sig), "action", a.String())
	if s.upg != nil && s.upg.stage == "quiesce" && (a == signals.Reload || a == signals.ScaleUp || a == signals.ScaleDown || a == signals.Upgrade) {
		s.upgradeSigs = append(s.upgradeSigs, sig) // the new parent applies it
		return
	}
	switch a {
	case signals.Upgrade:
		s.requestUpgrade(nil)
	case signals.Stop:
		if s.phase >= stopping && sig == os.Interrupt {
			s.sigints++
		}
		s.stopAll(s.sigints > 0) // a second ^C stops at once
	case signals.Quit:
		s.stopAll(true)
	case signals.Reload:
		s.requestReload(nil)
	case signals.ScaleUp, signals.ScaleDown:
		n := s.wanted() + 1
		if a == signals.ScaleDown {
			n = s.wanted() - 1
		}
		if err := s.scale(n); err != nil {
			s.log.Warn("cannot scale", "signal", signals.Name(sig), "err", err)
		}
	}
}

// Reload starts a new generation and waits until it serves (nil) or has
// failed (its cause); one requested during another joins the next.
func (s *Supervisor) Reload(ctx context.Context) error { return s.await(ctx, s.requestReload) }

// await hands request to the loop with a channel for its outcome, and
// waits for that, for ctx, or for the loop's end.
func (s *Supervisor) await(ctx context.Context, request func(done chan<- error)) error {
	done := make(chan error, 1)
	select {
	case s.calls <- func() { request(done) }:
	case <-s.done:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-done:
		return err
	case <-s.done:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

// SetWorkers changes the number of slots to n.
func (s *Supervisor) SetWorkers(n int) error { return s.do(func() error { return s.scale(n) }) }

// Workers returns a snapshot of the live workers, by id then generation.
func (s *Supervisor) Workers() []Info {
	var infos []Info
	s.do(func() error {
		for w := range s.workers {
			infos = append(infos, w.info())
		}
		return nil
	})
	slices.SortFunc(infos, func(a, b Info) int {
		return cmp.Or(cmp.Compare(a.ID, b.ID), cmp.Compare(a.Gen, b.Gen))
	})
	return infos
}

// Kill sends sig to slot id's serving worker; one that dies of it is
// replaced, as after a crash.
func (s *Supervisor) Kill(id int, sig os.Signal) error {
	return s.do(func() error {
		w, err := s.serving(id)
		if err != nil {
			return err
		}
		return w.proc.Signal(sig)
	})
}

// Disconnect drains slot id's serving worker and leaves the slot empty
// until the next reload or SetWorkers.
func (s *Supervisor) Disconnect(id int) error {
	return s.do(func() error {
		w, err := s.serving(id)
		if err != nil {
			return err
		}
		w.slot.cur, w.slot.parked = nil, true
		s.routesDirty = true
		s.drain(w, "disconnect")
		return nil
	})
}

// Send sends a message from the parent to worker `to` or to All.
func (s *Supervisor) Send(to int, data []byte, files []syscall.Conn) error {
	if to == msg.Parent {
		return errors.New("prefork: the parent cannot send to itself")
	}
	f, err := msg.NewFrame(wire.TypeUser, msg.Parent, to, data, files, s.cfg.MaxMessageSize)
	if err != nil {
		return err
	}
	defer wire.CloseFDs(f.FDs)
	routes := *s.routes.Load()
	if to == msg.All {
		var errs []error
		for id, w := range routes {
			if err := w.ch.Send(f); err != nil {
				errs = append(errs, msg.SendErr(id, err))
			}
		}
		return errors.Join(errs...)
	}
	w := routes[to]
	if w == nil {
		return fmt.Errorf("%w: %s", msg.ErrNoWorker, msg.AddrName(to))
	}
	return msg.SendErr(to, w.ch.Send(f)) // checked against w's agreed limit
}

// Request sends a request to worker `to` and waits for the answer, for
// ctx, or for the worker's exit.
func (s *Supervisor) Request(ctx context.Context, to int, data []byte) ([]byte, error) {
	if to == msg.Parent || to == msg.All {
		return nil, fmt.Errorf("prefork: the parent can only send requests to one worker, not %s", msg.AddrName(to))
	}
	f, err := msg.NewFrame(wire.TypeRequest, msg.Parent, to, data, nil, s.cfg.MaxMessageSize)
	if err != nil {
		return nil, err
	}
	w := (*s.routes.Load())[to]
	if w == nil {
		return nil, fmt.Errorf("%w: %s", msg.ErrNoWorker, msg.AddrName(to))
	}
	return s.reqs.Do(ctx, w, func(id uint64) error {
		f.ID = id
		return msg.SendErr(to, w.ch.SendDirect(f))
	})
}
