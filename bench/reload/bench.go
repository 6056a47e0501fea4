package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"syscall"
	"time"

	"github.com/forkline/forkline/bench/internal/harness"
	"github.com/forkline/forkline/bench/internal/load"
)

// options are one run's settings: the suite's knobs, and the server.
type options struct {
	addr, path          string
	clients, workers    int
	keepAlive           bool
	think               time.Duration
	checkIdle           bool
	timeout             time.Duration
	warmup, steady      time.Duration
	reloads             int
	gapMin, gapMax      time.Duration
	tail, fixed         time.Duration
	pid                 int
	signal              syscall.Signal // sent to pid to reload, when cmd is empty
	cmd                 string         // reload command, split on spaces, run without a shell
	logPath, ready      string         // the server's log: ready when a line has ready in it
	fail                string         // log text that says a reload failed
	reloadLimit         time.Duration
	maxRequests, detail int
	maxTime             time.Duration
	seed                uint64
}

func (o *options) check() error {
	switch {
	case o.gapMax < o.gapMin:
		return fmt.Errorf("-gap-max %v is below -gap-min %v", o.gapMax, o.gapMin)
	case o.timeout <= 0 || o.reloadLimit <= 0:
		return errors.New("TIMEOUT and -reload-timeout must be positive")
	}
	return nil
}

// measure drives one run against a started server: load, steady phase,
// reloads, tail. The phases' lengths are timed with harness.Pause: they
// are the load's shape, not waits for something to happen.
func measure(ctx context.Context, o options) (*results, error) {
	ctx, cancel := context.WithTimeout(ctx, o.maxTime)
	defer cancel()
	if _, err := harness.WaitDistinct(ctx, o.addr, o.workers, 10*time.Second); err != nil {
		return nil, err
	}
	trig, err := newTrigger(o)
	if err != nil {
		return nil, err
	}
	defer trig.close()

	ld := load.Start(load.Config{Addr: o.addr, Path: o.path, Clients: o.clients, KeepAlive: o.keepAlive,
		CheckIdle: o.checkIdle, Think: o.think, Timeout: o.timeout, MaxRequests: o.maxRequests, Seed: o.seed})
	res := &results{keepAlive: o.keepAlive, clients: o.clients}
	runErr := phases(ctx, o, ld, trig, res)
	res.end = ld.Since(time.Now())
	res.recs, res.stale = ld.Stop()
	if runErr == nil && res.failedReloads() > 0 {
		runErr = fmt.Errorf("%d of %d reloads did not complete", res.failedReloads(), len(res.windows))
	}
	return res, runErr
}

// phases runs the warm-up and steady phase, the reloads and the tail.
func phases(ctx context.Context, o options, ld *load.Load, trig *trigger, res *results) error {
	res.steadyStart = ld.Since(time.Now().Add(o.warmup))
	if !harness.Pause(ctx, o.warmup+o.steady) {
		return ctx.Err()
	}
	res.steadyEnd = ld.Since(time.Now())
	rng := rand.New(rand.NewPCG(o.seed, 0x5eed))
	for i := range o.reloads {
		gap := o.gapMin
		if o.gapMax > o.gapMin {
			gap += time.Duration(rng.Int64N(int64(o.gapMax - o.gapMin)))
		}
		if !harness.Pause(ctx, gap) {
			return ctx.Err()
		}
		w := trig.reload(ctx, o.reloadLimit)
		w.sent, w.ready, w.done = ld.Since(w.sentAt), ld.Since(w.readyAt), ld.Since(w.doneAt)
		res.windows = append(res.windows, w)
		if w.err != nil {
			harness.Logf("reload %d: %v", i+1, w.err)
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
	}
	harness.Pause(ctx, o.tail)
	return nil
}
