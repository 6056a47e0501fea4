package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"time"

	"github.com/forkline/forkline/bench/internal/harness"
	"github.com/forkline/forkline/bench/internal/load"
)

// options are one run's settings: the suite's knobs, and the server.
type options struct {
	addr, path          string
	clients, workers    int
	keepAlive           bool
	checkIdle           bool
	timeout             time.Duration
	warmup, steady      time.Duration
	upgrades            int
	gapMin, gapMax      time.Duration
	tail                time.Duration
	pid                 int
	logPath             string
	limit               time.Duration
	maxRequests, detail int
	maxTime             time.Duration
	seed                uint64
}

func (o *options) check() error {
	switch {
	case o.gapMax < o.gapMin:
		return fmt.Errorf("-gap-max %v is below -gap-min %v", o.gapMax, o.gapMin)
	case o.timeout <= 0 || o.limit <= 0:
		return errors.New("TIMEOUT and -upgrade-timeout must be positive")
	}
	return nil
}

// measure drives one run against a started server: load, steady phase,
// upgrades, tail. The phases' lengths are timed with harness.Pause: they
// are the load's shape, not waits for something to happen.
func measure(ctx context.Context, o options, dep deploy, builds []build, exited <-chan struct{}) (*results, error) {
	ctx, cancel := context.WithTimeout(ctx, o.maxTime)
	defer cancel()
	ready, err := harness.WaitDistinct(ctx, o.addr, o.workers, 10*time.Second)
	if err != nil {
		return nil, err
	}
	up, err := newUpgrader(o, dep, exited)
	if err != nil {
		return nil, err
	}
	defer up.close()
	ld := load.Start(load.Config{Addr: o.addr, Path: o.path, Clients: o.clients, KeepAlive: o.keepAlive,
		CheckIdle: o.checkIdle, Timeout: o.timeout, MaxRequests: o.maxRequests, Seed: o.seed})
	res := &results{keepAlive: o.keepAlive, clients: o.clients, pid: o.pid, kids: up.kids, answered: ready.Pids}
	runErr := phases(ctx, o, ld, up, builds, res)
	res.end = ld.Since(time.Now())
	res.recs, res.stale = ld.Stop()
	res.final = finalCheck(o.pid, dep, res)
	if runErr == nil && res.failedUpgrades() > 0 {
		runErr = fmt.Errorf("%d of %d upgrades did not complete", res.failedUpgrades(), len(res.windows))
	}
	return res, runErr
}

// phases runs the warm-up and steady phase, the upgrades and the tail.
func phases(ctx context.Context, o options, ld *load.Load, up *upgrader, builds []build, res *results) error {
	res.steadyStart = ld.Since(time.Now().Add(o.warmup))
	if !harness.Pause(ctx, o.warmup+o.steady) {
		return ctx.Err()
	}
	res.steadyEnd = ld.Since(time.Now())
	rng := rand.New(rand.NewPCG(o.seed, 0x5eed))
	for i := 1; i <= o.upgrades; i++ {
		gap := o.gapMin
		if o.gapMax > o.gapMin {
			gap += time.Duration(rng.Int64N(int64(o.gapMax - o.gapMin)))
		}
		if !harness.Pause(ctx, gap) {
			return ctx.Err()
		}
		w := up.upgrade(ctx, i, builds[i%2]) // B, A, B, ...: A runs first
		w.sent, w.done = ld.Since(w.sentAt), ld.Since(w.doneAt)
		res.windows = append(res.windows, w)
		res.last = w.build
		if w.err != nil {
			harness.Logf("upgrade %d: %v", i, w.err)
			select {
			case <-up.exited:
				return fmt.Errorf("upgrade %d: the parent exited", i)
			default:
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
	}
	harness.Pause(ctx, o.tail)
	return nil
}

// finalCheck: at the end, /proc/<pid>/exe is the file at the deploy path,
// with the mark of the build installed last.
func finalCheck(pid int, dep deploy, res *results) string {
	fi, err := os.Stat(dep.path)
	if err != nil {
		return "FAILED: " + err.Error()
	}
	same, mark, err := exeCheck(pid, fi)
	switch {
	case err != nil:
		return "FAILED: " + err.Error()
	case !same:
		return fmt.Sprintf("FAILED: /proc/%d/exe is not the file at %s (its mark: %q)", pid, dep.path, mark)
	case mark != res.last:
		return fmt.Sprintf("FAILED: /proc/%d/exe ends with build %q; build %q was installed last", pid, mark, res.last)
	}
	return ""
}
