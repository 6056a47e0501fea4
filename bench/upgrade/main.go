// Command upgrade is the suite behind `make bench-upgrade`: what upgrading
// forkline's parent in place (SIGUSR2: preflight, detach, re-exec of the
// executable on disk in the same process) costs the clients, and whether
// the parent and its workers come out of it the same processes.
//
// Two builds of examples/hello, A and B, are the same binary with a
// different mark appended ("\nforkline-bench-build:a\n"; an ELF file runs
// with bytes after it), so that the files differ. A is installed as
// <work>/deploy/hello (a copy renamed into place, as a deploy does) and
// started from there with WORKERS (2) workers on 127.0.0.1:<free port>.
// Then, under load, UPGRADES (20) times, after a random pause in
// [-gap-min, -gap-max] (250-500 ms): the other build is installed by rename
// and the parent is sent SIGUSR2; the upgrade is complete when the log
// (hello's text slog on stderr, or JSON) gains msg="upgraded in place";
// msg="upgrade refused, this parent carries on" or msg="upgrade rolled
// back: this is the previous parent again" fail it. Builds alternate B, A,
// B, ...; after each upgrade the suite checks that the parent is the same
// process (pid and start time), that its children are the same workers,
// and that /proc/<pid>/exe is the file just installed (the same inode, and
// the build's mark at its end).
//
// Runs, each against a fresh server: "fresh" (a new connection per request,
// "Connection: close", as bench/reload measures) and "keepalive" (clients
// keep their connections).
//
// Load: CLIENTS (32) closed-loop clients (bench/internal/load); WARMUP s,
// then STEADY s of steady state, then the upgrades, then -tail (0.5 s). An
// upgrade's window runs from SIGUSR2 sent until the bench reads the
// "upgraded in place" line (the log is followed with inotify, with a 5 ms
// fallback); a request belongs to an upgrade when its [start, end] overlaps
// the window.
//
// Prints, one per line (the fresh run; the keepalive run's with the prefix
// "keepalive-"):
//
//	upgrade-failed <n> of <m>         failed requests of all requests of the run
//	upgrades-completed <k> of <u>     upgrades that ended in "upgraded in place"
//	upgrade-ms p50/max <a>/<b>        SIGUSR2 sent -> "upgraded in place" read by the bench
//	upgrade-signal-ms p50/max         SIGUSR2 sent -> "upgrading the parent in place"
//	upgrade-preflight-ms p50/max      "upgrading ..." -> "upgrade: executing the new parent"
//	                                  (the preflight run of the new binary and the
//	                                  channels' detach)
//	upgrade-exec-ms p50/max           "executing ..." -> "upgraded in place" (exec,
//	                                  the new image's start, the adoption)
//	upgrade-exec-to-first-line-ms p50/max
//	                                  "executing ..." -> the new image's first line: an
//	                                  upper bound on the span in which SIGTERM or
//	                                  SIGQUIT would kill the parent
//	                                  (the split by the log's own stamps, to the ms)
//	upgrade-p99-ms <x>                p99 latency of the requests overlapping a window
//	steady-p99-ms <x>
//	upgrade-p99-ratio <x>             upgrade-p99-ms / steady-p99-ms
//	check-parent-pid ok|FAILED ...
//	check-worker-pids ok|FAILED ...
//	check-exe ok|FAILED ...
//
// and writes them, with every run's per-upgrade timings, to the results
// file.
//
// Usage:  cd bench && go run ./upgrade            (make bench-upgrade)
//
// Knobs, as environment variables or as the flags in brackets:
//
//	UPGRADES=20 (-upgrades)  CLIENTS=32 (-clients)  STEADY=3 (-steady, seconds)
//	WARMUP=0.5 (-warmup, seconds)  TIMEOUT=2s (-timeout, per request)
//	WORKERS=2 (-workers)  RUNS="fresh keepalive" (-runs)
//	RESULTS=upgrade.md (-results; in bench/results/, "" = none)
//	KEEP=1 (-keep): keep the temp dir (binaries, logs, raw reports)
//
// and, as flags only: -gap-min, -gap-max, -tail, -check-idle, -path,
// -upgrade-timeout, -max-requests, -max-time, -seed, -details (see -help).
//
// The server runs in a session, and so a process group, of its own; it is
// stopped by SIGTERM to that group, then its workers (in groups of their
// own) are waited for, and what is left is SIGKILLed after 10 s.
package main

import (
	"strings"
	"time"

	"github.com/forkline/forkline/bench/internal/harness"
)

type config struct {
	base    options
	runs    *string
	workers *int
}

func knobs() (*harness.Knobs, *config, func() options) {
	k := harness.NewKnobs("upgrade", "failed requests, latency and identity checks through in-place upgrades of forkline's parent (SIGUSR2)")
	c := &config{}
	upgrades := k.Int("upgrades", "UPGRADES", 20, 1, "upgrades, alternating build B and build A")
	clients := k.Int("clients", "CLIENTS", 32, 1, "concurrent closed-loop clients")
	steady := k.Seconds("steady", "STEADY", 3*time.Second, "steady phase")
	warmup := k.Seconds("warmup", "WARMUP", 500*time.Millisecond, "load before the steady phase, left out of the latency figures")
	timeout := k.Seconds("timeout", "TIMEOUT", 2*time.Second, "deadline of one request, connect included")
	c.workers = k.Int("workers", "WORKERS", 2, 1, "worker processes")
	c.runs = k.String("runs", "RUNS", "fresh keepalive", "runs, in order: fresh (Connection: close), keepalive")
	gapMin := k.Seconds("gap-min", "", 250*time.Millisecond, "shortest pause before each upgrade")
	gapMax := k.Seconds("gap-max", "", 500*time.Millisecond, "longest pause before each upgrade")
	tail := k.Seconds("tail", "", 500*time.Millisecond, "load after the last upgrade is done")
	checkIdle := k.Bool("check-idle", "", true, "with keep-alive, before reusing a connection check that the server has not closed it")
	path := k.String("path", "", "/", "request path; the answer must contain \"hello from ... pid=<pid>\"")
	limit := k.Seconds("upgrade-timeout", "", 15*time.Second, "bound on one upgrade, from SIGUSR2 to the log line")
	maxRequests := k.Int("max-requests", "", 5_000_000, 1, "bound on requests recorded (32 bytes each)")
	maxTime := k.Seconds("max-time", "", 5*time.Minute, "bound on one run")
	seed := k.Int("seed", "", 1, 0, "seed of the random pauses")
	details := k.Int("details", "", 40, 0, "failed requests listed one by one in the report")
	k.Always("upgrades", "clients", "steady", "warmup", "timeout")
	opts := func() options {
		return options{path: *path, clients: *clients, workers: *c.workers, checkIdle: *checkIdle,
			timeout: *timeout, warmup: *warmup, steady: *steady, upgrades: *upgrades, gapMin: *gapMin, gapMax: *gapMax,
			tail: *tail, limit: *limit, maxRequests: *maxRequests, detail: *details, maxTime: *maxTime, seed: uint64(*seed)}
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
