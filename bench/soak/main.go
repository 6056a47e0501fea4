// Command soak is forkline's chaos soak (`make soak`; not part of `make
// test`): examples/hello under load while a seeded random schedule kills,
// stalls, reloads and scales it, then SIGKILLs the parent and starts it
// again. It prints exact accounting and exits 1 when a target is missed.
//
//	cd bench && go run ./soak                       # 60 s
//	cd bench && go run ./soak -duration 20s -seed 42 # replay a schedule
//
// What it decided:
//
//   - The server: examples/hello built from the repository (found with `go
//     list -m`, or -root/-src) into a temporary directory, started in a
//     process group of its own on 127.0.0.1:<port>, where the port is picked
//     by binding and closing (port 0 cannot work: the restarted parent must
//     bind the same port), with 2 workers, -v (the worker lifecycle lines,
//     fork/listening/exit with pids, are debug lines) and
//     -heartbeat-timeout 2s: stalls last at most 800 ms, so a stall must not
//     be mistaken for a hang (a false positive would be a heartbeat kill, and
//     its failures count against the stall), and a worker that really hung
//     would be repaired. The parent has Pdeathsig SIGKILL, so it dies with us.
//   - Load: 32 closed-loop clients opening a new connection per request
//     (Connection: close) and 16 keep-alive clients, which reconnect after a
//     `Connection: close` answer. Each request (connect included) is bounded
//     by -timeout (5 s). Failures are classified refused (ECONNREFUSED), reset
//     (ECONNRESET, EPIPE, EOF before a full answer), timeout, other (a bad
//     answer); a client pauses 10 ms after a failure, which bounds the load
//     while nothing listens. At the end every client finishes the request it
//     has in flight, so no request is cut short by the soak itself.
//   - Schedule (seeded; -seed replays its choices, not the system's timing):
//     after 1 s of quiet, every 0.5–2 s one fault: SIGKILL a worker (30%),
//     SIGSTOP one for 100–800 ms then SIGCONT (25%), 1–5 SIGHUPs back to back
//     (25%), SIGTTIN or SIGTTOU (20%, the count kept within 1..4; we wait for
//     the parent's answer); at most -max-faults. Faults stop at duration −
//     max(6 s, duration/10); the count is scaled back to 2 (each step after
//     the same 0.5–2 s pause, so a restoring SIGTTOU is no likelier to land
//     on a fresh kill than a random one), the cluster must settle
//     (watchdog), the leak figures are taken, and the parent is SIGKILLed
//     and started again on the same port once its workers are gone (watched
//     by pidfd). Workers are signalled by pidfd after checking that their
//     parent is ours; parents by pid (they are our children).
//   - Attribution: a fault's window runs from its effect (the signal; for a
//     reload or a scaling, the parent's "reloading"/"scaling" line, since a
//     SIGHUP may wait behind a running reload) until the parent's log shows
//     the cluster back at its wanted count serving (every wanted slot has a
//     ready worker of the current generation, no reload running), plus the
//     request timeout. A worker kill first SIGSTOPs the victim and waits
//     until all its threads are stopped, then records the client ports of
//     the connections it holds (its socket inodes from /proc/<pid>/fd
//     matched against the kernel's TCP table on the port, not LISTEN; the
//     table is read with sock_diag, which skips TIME_WAIT in the kernel:
//     /proc/net/tcp, the fallback, took 100–300 ms under this load with the
//     victim stopped meanwhile), then SIGKILLs it. A
//     failure on one of those very connections (same client port, connected
//     before the kill) is allowed: the worker had accepted it. Any other
//     failure is blamed on the latest fault whose window contains it: a
//     kill's ("lost queued connection"), a reload's, a scaling's or a stall's
//     is a violation, as is one no fault explains; failures during the
//     parent restart are expected (nobody listens during the gap) and
//     reported. The report lists, for each violation, every open window.
//   - Leaks: the first parent's descriptors (count and kinds), threads, and
//     the processes running our binary, after the first ready and once the
//     cluster is back to 2 workers with every drained worker gone (watched
//     on the log and /proc, watchdog 30 s). The figures are re-read until
//     they match (watchdog 3 s), so a descriptor or thread caught mid-call is
//     not called a leak. Go never ends an idle thread, so the Threads count
//     grows with the most workers the parent ever waited on at once; it is
//     reported, not judged. The thread check compares, by wchan, the threads
//     waiting anywhere but the runtime's idle places (futex, epoll, sysmon's
//     sleep): one waitid per live worker, and any blocked call that would
//     pile up. The restarted parent is a new process: it must serve, exit 0
//     on SIGTERM and leave no process behind.
//   - soak-violations counts the violating failures plus each failed check
//     (leak, restart, cleanup). The report goes to stdout and to
//     bench/results/soak.md; the figures lines come last on stdout.
package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	cfg := parseFlags()
	if err := cfg.resolve(); err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(2)
	}
	os.Exit(run(cfg))
}

// soak is one run.
type soak struct {
	cfg     config
	bin     string
	port    int
	addr    string
	rng     *rand.Rand
	t0      time.Time
	p1, p2  *parent
	faults  []*fault
	load    *load
	before  usage
	after   usage
	checks  []check
	peak    atomic.Int64 // most worker processes of the first parent at once
	restart restartResult
}

// check is one pass/fail target besides the failures.
type check struct {
	name, detail string
	ok           bool
}

func run(cfg config) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	dir, err := os.MkdirTemp("", "forkline-soak-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		return 2
	}
	defer os.RemoveAll(dir)
	s := &soak{cfg: cfg, rng: rand.New(rand.NewPCG(cfg.seed, cfg.seed^0x9e3779b97f4a7c15))}
	defer s.cleanup()
	if err := s.setup(dir); err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		return 2
	}
	if err := s.soak(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		s.check("run completed", err.Error(), false)
	}
	return s.report()
}

func (s *soak) setup(dir string) error {
	s.progress("building examples/hello from %s", s.cfg.src)
	bin, err := build(s.cfg.src, dir)
	if err != nil {
		return err
	}
	s.bin = bin
	if s.port, err = freePort(); err != nil {
		return err
	}
	s.addr = fmt.Sprintf("127.0.0.1:%d", s.port)
	s.load = &load{addr: s.addr, timeout: s.cfg.timeout}
	return nil
}

// cleanup kills whatever is left of what we started, even on failure.
func (s *soak) cleanup() {
	s.p1.kill(s.bin)
	s.p2.kill(s.bin)
	if s.bin != "" {
		sweep(s.bin)
	}
}

func (s *soak) progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "soak: "+format+"\n", args...)
}

// rel prints t relative to the start of the load.
func (s *soak) rel(t time.Time) string {
	if s.t0.IsZero() || t.IsZero() {
		return "-"
	}
	return fmt.Sprintf("%.3fs", t.Sub(s.t0).Seconds())
}

func (s *soak) check(name, detail string, ok bool) {
	s.checks = append(s.checks, check{name: name, detail: detail, ok: ok})
	if !ok {
		s.progress("CHECK FAILED: %s: %s", name, detail)
	}
}

// pause waits d, or until ctx (if any) is done; it reports whether d
// passed. It is the schedule's own rhythm, never a wait for a state.
func (s *soak) pause(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	var done <-chan struct{}
	if ctx != nil {
		done = ctx.Done()
	}
	select {
	case <-t.C:
		return true
	case <-done:
		return false
	}
}
