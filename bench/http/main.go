// Command http is the throughput suite behind `make bench`: hello-world
// servers, each with WORKERS (2) workers where that applies, all on
// 127.0.0.1 under wrk.
//
//	nethttp              net/http, one process (peers/nethttp) — baseline
//	forkline-nethttp     examples/hello (forkline + net/http)
//	forkline-nethttp-1w  the same with 1 worker (GOMAXPROCS=2, as the
//	                     baseline's one process): a control that isolates
//	                     what forkline adds to each request from what two
//	                     processes cost the OS scheduler
//	minprefork           the least a prefork can do (peers/minprefork):
//	                     N SO_REUSEPORT sockets, N copies of itself serving
//	                     net/http with GOMAXPROCS=1, nothing else — the
//	                     control for what forkline's request path costs
//	fasthttp-prefork     github.com/valyala/fasthttp/prefork, Reuseport on
//	                     (peers/fasthttpprefork)                 — baseline
//	forkline-fasthttp    examples/fasthttp (forkline + fasthttp)
//	nginx                worker_processes 2, listen ... reuseport — reference
//	node-cluster         Node's cluster module (peers/node-cluster.js) — reference
//
// Left out of the default PEERS, for checks: nethttp-tcp (the baseline
// with GODEBUG=multipathtcp=0: plain TCP instead of Go's default Multipath
// TCP listener) and forkline-nethttp-2p (2 workers of 2 Ps each).
//
// Rounds are interleaved (round 1: every peer, round 2: every peer in
// reverse order, ...) so that drift in a noisy machine's load hits every
// peer alike; the table shows the median per peer. For each run it samples
// the parent's CPU time over the measured run (~0 for forkline: the parent
// is not in the request path), the workers' CPU time and context switches
// per request, how the kernel spread wrk's connections over the workers,
// the VmRSS of the parent and of each worker right after the run, and how
// much CPU other processes took meanwhile (runs where that is over 5% are
// disturbed; the ratios are also given over the undisturbed rounds only).
// Then it measures startup: exec until WORKERS distinct worker pids have
// answered on fresh connections, STARTUP_N times, interleaved too.
//
// stdout gets the results file's text, then, one per line:
//
//	request-path-ratio <x>   median over rounds of forkline-nethttp's req/s
//	                         over minprefork's, in the same rounds
//
// Usage:  cd bench && go run ./http            (make bench)
//
//	go run ./http threads [peer...]   where a server's context switches go,
//	                                  thread by thread (see threads.go)
//
// Knobs, as environment variables or as the flags in brackets:
//
//	ROUNDS=3 (-rounds)  DURATION=10 (-duration, seconds of each measured run)
//	WARMUP=1 (-warmup, seconds, discarded)  CONNS=64 (-conns)  THREADS=1 (-threads)
//	STARTUP_N=10 (-startup-n)  WORKERS=2 (-workers)
//	PEERS="nethttp forkline-nethttp ..." (-peers)  FORKLINE_MODE=reuseport (-mode)
//	NEW_CONN=1 (-new-conn): "Connection: close", a new connection per request,
//	  which shows the cost of Node's primary accepting every connection
//	SERVER_CPUS=0 WRK_CPUS=1 (-server-cpus, -wrk-cpus; taskset CPU lists, unset:
//	  any CPU): the servers and wrk apart, a stand-in for clients on another machine
//	RESULTS=http.md (-results; in bench/results/, "" = none)
//	KEEP=1 (-keep): keep the temp dir (binaries, raw wrk output, logs)
//
// On a shared, noisy machine more and shorter rounds (ROUNDS=8 DURATION=5)
// give steadier medians.
//
// Why -t1 -c64 on 2 cores: wrk shares the machine with the server, so one
// wrk thread (at most one core) leaves the other core and the rest of the
// first to the 2 workers; 64 keep-alive connections keep ~32 requests in
// flight per worker, enough to saturate both without measuring queueing.
// (Measured here for net/http: -t1 -c16/-c64/-c256 gave 59k/56k/52k req/s,
// -t2 -c64 62k: the choice does not change the ranking, only the level.)
//
// Every server runs in a session, and so a process group, of its own and
// is stopped by signalling that group only, SIGTERM first and SIGKILL
// after 10 s; forkline's workers, in groups of their own, must be gone too.
package main

import (
	"fmt"
	"strings"

	"github.com/forkline/forkline/bench/internal/harness"
)

// config is the suite's knobs.
type config struct {
	rounds, seconds, warmup, conns, threads, startupN, workers *int
	peers, mode, serverCPUs, wrkCPUs                           *string
	newConn                                                    *bool
}

func knobs() (*harness.Knobs, *config) {
	k := harness.NewKnobs("http", "hello-world servers under wrk, interleaved rounds")
	c := &config{
		rounds:     k.Int("rounds", "ROUNDS", 3, 1, "interleaved rounds"),
		seconds:    k.Int("duration", "DURATION", 10, 1, "seconds of each measured wrk run"),
		warmup:     k.Int("warmup", "WARMUP", 1, 1, "seconds of wrk before each measured run, discarded"),
		conns:      k.Int("conns", "CONNS", 64, 1, "wrk connections"),
		threads:    k.Int("threads", "THREADS", 1, 1, "wrk threads"),
		startupN:   k.Int("startup-n", "STARTUP_N", 10, 1, "startup samples per peer"),
		workers:    k.Int("workers", "WORKERS", 2, 1, "workers per peer"),
		peers:      k.String("peers", "PEERS", strings.Join(defaultPeers, " "), "peers, in the order of odd rounds"),
		mode:       k.String("mode", "FORKLINE_MODE", "reuseport", "forkline's -mode"),
		newConn:    k.Bool("new-conn", "NEW_CONN", false, `send "Connection: close": a new connection per request`),
		serverCPUs: k.String("server-cpus", "SERVER_CPUS", "", "taskset CPU list for the servers"),
		wrkCPUs:    k.String("wrk-cpus", "WRK_CPUS", "", "taskset CPU list for wrk"),
	}
	k.Always("rounds", "duration", "warmup", "conns", "threads", "startup-n")
	return k, c
}

func main() {
	k, c := knobs()
	harness.Main(k, func(s *harness.Suite) error {
		if args := k.Args(); len(args) > 0 {
			if args[0] != "threads" {
				return fmt.Errorf("unknown argument %q (want: threads [peer...])", args[0])
			}
			return threads(s, c, args[1:])
		}
		return run(s, c)
	})
}

// run is the suite proper: throughput rounds, startup samples, report.
func run(s *harness.Suite, c *config) error {
	b, err := newBench(s, c, strings.Fields(*c.peers))
	if err != nil {
		return err
	}
	b.loads = append(b.loads, harness.LoadAvg())
	if err := b.throughput(); err != nil {
		return err
	}
	b.loads = append(b.loads, harness.LoadAvg())
	if err := b.startup(); err != nil {
		return err
	}
	b.loads = append(b.loads, harness.LoadAvg())
	text, err := s.WriteResults(b.report())
	fmt.Print(text)
	if err != nil {
		return err
	}
	if line, ok := b.requestPathLine(); ok {
		fmt.Printf("\n%s\n", line)
	}
	return nil
}
