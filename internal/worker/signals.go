package worker

import (
	"context"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/forkline/forkline/internal/wire"
)

// watchSignals runs the worker's signal goroutine until ctx is done. The
// parent speaks for the cluster, and workers run in process groups of
// their own, so a ^C at a terminal does not reach them; should a HUP, INT,
// TTIN or TTOU reach a worker anyway, it is ignored. SIGTERM from Linux
// when the parent died drains at once. SIGTERM from anyone else (an
// operator, systemd signalling the whole cgroup, Kill) is told to the
// parent, which drains this worker as it drains any, once its successor
// serves or, if the cluster is stopping, with the rest; should the drain
// request not come within StopTimeout, the worker drains on its own.
func (wk *Worker) watchSignals(ctx context.Context, cancel context.CancelCauseFunc, stop <-chan bool) <-chan struct{} {
	signal.Ignore(syscall.SIGINT, syscall.SIGHUP, ttin, ttou)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer signal.Stop(sigs)
		select {
		case <-sigs:
			if parentPID() != self.parent {
				wk.parentGone(cancel)
				return
			}
			wk.conn.SendControl(&wire.Frame{Type: wire.TypeStopping, From: uint32(wk.id), Payload: []byte("SIGTERM")})
			t := time.NewTimer(wk.cfg.StopTimeout)
			defer t.Stop()
			select {
			case <-t.C:
				wk.log.Warn("SIGTERM and no drain request from the parent within StopTimeout: draining")
				cancel(ErrDrain)
			case <-ctx.Done():
			}
		case fast := <-stop:
			if fast {
				Exit(1)
			}
			cancel(ErrDrain)
		case <-ctx.Done():
		}
	}()
	return done
}
