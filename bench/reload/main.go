// Command reload is the suite behind `make bench-reload`: what a
// zero-downtime reload costs the clients, forkline against `nginx -s
// reload`.
//
// Three runs, each against a fresh server with WORKERS (2) workers on
// 127.0.0.1:
//
//	forkline    examples/hello; reload = SIGHUP to the parent, complete when
//	            the parent logs msg=reloaded
//	keepalive   the same, with clients that keep their connections open
//	            (the server's "Connection: close" makes them reconnect)
//	nginx       worker_processes 2, listen ... reuseport, return 200 "Hello...";
//	            reload = `nginx -p DIR -c CONF -s reload`; nginx gives no
//	            ready signal, so the reload counts as ready once the command
//	            has exited and 2 new worker processes run under the master
//
// Load: CLIENTS closed-loop clients (bench/internal/load), a new connection
// per request ("Connection: close", the way the nginx bar was measured)
// except in the keepalive run; WARMUP s, then STEADY s of steady state, then
// RELOADS reloads, each after a random pause in [-gap-min, -gap-max]
// (250-500 ms), then -tail (0.5 s) more. A reload's window runs from its
// trigger (signal sent, command started) until every worker of the old
// generation has exited. A request belongs to a reload when its interval
// [start, end] overlaps the window; the "200ms" figures are over the
// requests that overlap [trigger, trigger + -fixed-window], the same span
// whichever server is measured; "phase2" over every request that started
// after the steady phase.
//
// Prints, one per line (forkline unless prefixed):
//
//	reload-failed <n>         failed requests over the whole run
//	reload-requests <n>       requests over the whole run (warm-up, steady, reloads)
//	reload-p99-ms <x>         p99 latency of the requests overlapping a reload window
//	steady-p99-ms <x>         p99 latency in the steady phase
//	reload-phase2-p99-ms <x>  p99 latency of every request after the steady phase
//	reload-200ms-p99-ms <x>   p99 latency of the requests overlapping the first
//	                          200 ms after each trigger (the same span for nginx)
//	nginx-reload-failed, nginx-reload-requests, nginx-reload-p99-ms,
//	nginx-steady-p99-ms, nginx-reload-phase2-p99-ms, nginx-reload-200ms-p99-ms
//	keepalive-reload-failed, keepalive-reload-requests, keepalive-reload-p99-ms,
//	keepalive-steady-p99-ms
//
// and writes them, with every run's full report, to the results file.
//
// Usage:  cd bench && go run ./reload            (make bench-reload)
//
// Knobs, as environment variables or as the flags in brackets:
//
//	RELOADS=20 (-reloads)  CLIENTS=32 (-clients)  STEADY=3 (-steady, seconds)
//	WARMUP=0.5 (-warmup, seconds)  TIMEOUT=2s (-timeout, per request)
//	WORKERS=2 (-workers)  RUNS="forkline keepalive nginx" (-runs)
//	RESULTS=reload.md (-results; in bench/results/, "" = none)
//	KEEP=1 (-keep): keep the temp dir (binaries, logs, raw reports)
//
// and, as flags only: -gap-min, -gap-max, -tail, -fixed-window, -think,
// -check-idle, -path, -reload-timeout, -max-requests, -max-time, -seed,
// -details (see -help).
//
// Every server runs in a session, and so a process group, of its own; it
// is stopped by SIGTERM to that group, then its workers (forkline's run in
// groups of their own) are waited for, and what is left is SIGKILLed after
// 10 s.
package main

import (
	"strings"
	"syscall"
	"time"

	"github.com/forkline/forkline/bench/internal/harness"
)

type config struct {
	base    options // the settings every run shares
	runs    *string
	workers *int
}

func knobs() (*harness.Knobs, *config, func() options) {
	k := harness.NewKnobs("reload", "failed requests and latency through zero-downtime reloads, forkline vs nginx")
	c := &config{}
	reloads := k.Int("reloads", "RELOADS", 20, 1, "reloads in the reload phase")
	clients := k.Int("clients", "CLIENTS", 32, 1, "concurrent closed-loop clients")
	steady := k.Seconds("steady", "STEADY", 3*time.Second, "steady phase")
	warmup := k.Seconds("warmup", "WARMUP", 500*time.Millisecond, "load before the steady phase, left out of the latency figures")
	timeout := k.Seconds("timeout", "TIMEOUT", 2*time.Second, "deadline of one request, connect included")
	c.workers = k.Int("workers", "WORKERS", 2, 1, "worker processes per generation")
	c.runs = k.String("runs", "RUNS", "forkline keepalive nginx", "runs, in order")
	gapMin := k.Seconds("gap-min", "", 250*time.Millisecond, "shortest pause before each reload")
	gapMax := k.Seconds("gap-max", "", 500*time.Millisecond, "longest pause before each reload")
	tail := k.Seconds("tail", "", 500*time.Millisecond, "load after the last reload is done")
	fixed := k.Seconds("fixed-window", "", 200*time.Millisecond, "also report latency over [trigger, trigger+this] of every reload (keep it below -gap-min)")
	think := k.Seconds("think", "", 0, "each client pauses a random time in [0, think] after each request (0: closed loop)")
	checkIdle := k.Bool("check-idle", "", true, "with keep-alive, before reusing a connection check that the server has not closed it")
	path := k.String("path", "", "/", "request path; the answer must contain \"hello from ... pid=<pid>\"")
	reloadLimit := k.Seconds("reload-timeout", "", 15*time.Second, "bound on one reload, from trigger to done")
	maxRequests := k.Int("max-requests", "", 5_000_000, 1, "bound on requests recorded (32 bytes each)")
	maxTime := k.Seconds("max-time", "", 5*time.Minute, "bound on one run")
	seed := k.Int("seed", "", 1, 0, "seed of the random pauses")
	details := k.Int("details", "", 40, 0, "failed requests listed one by one in the report")
	k.Always("reloads", "clients", "steady", "warmup", "timeout")
	opts := func() options {
		return options{path: *path, clients: *clients, workers: *c.workers, think: *think, checkIdle: *checkIdle,
			timeout: *timeout, warmup: *warmup, steady: *steady, reloads: *reloads, gapMin: *gapMin, gapMax: *gapMax,
			tail: *tail, fixed: *fixed, signal: syscall.SIGHUP, fail: "reload failed", reloadLimit: *reloadLimit,
			maxRequests: *maxRequests, detail: *details, maxTime: *maxTime, seed: uint64(*seed)}
	}
	return k, c, opts
}

func main() {
	k, c, opts := knobs()
	harness.Main(k, func(s *harness.Suite) error {
		c.base = opts()
		if err := c.base.check(); err != nil {
			return err
		}
		runs := strings.Fields(*c.runs)
		if err := checkRuns(runs); err != nil {
			return err
		}
		u, err := setup(s, c, runs)
		if err != nil {
			return err
		}
		for _, r := range runs {
			if err := u.run(r); err != nil {
				return err
			}
		}
		return u.finish()
	})
}
