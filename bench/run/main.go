// Command run is the suite behind `make bench-run`: `forkline run`, which
// runs any program as the cluster's workers (each with its own
// SO_REUSEPORT socket as fd 3, the parent out of the request path),
// against the way that program's own world runs it on 2 workers. All on
// 127.0.0.1 under wrk, in interleaved rounds, on a fresh server per run.
//
//	run-node        forkline run -workers 2 -ready after=300ms -- node server.js
//	                (run/server.js: Node's http hello world on
//	                listen({fd: 3}); each worker accepts on its own socket)
//	node-cluster    node peers/node-cluster.js -workers 2 with
//	                NODE_CLUSTER_SCHED_POLICY=rr (cluster.schedulingPolicy =
//	                cluster.SCHED_RR, the default on Linux): the primary
//	                accepts every connection and hands it to a worker, round
//	                robin; the same handler as server.js
//	gunicorn        gunicorn -w 2 -k sync -b 127.0.0.1:<port> app:app
//	                (run/app.py): one master, one shared socket, 2 sync
//	                workers accepting on it
//	run-gunicorn    forkline run -workers 2 -- gunicorn -w 1 -k sync app:app:
//	                2 gunicorn master+worker pairs, each on its own socket.
//	                No -b: gunicorn 20.1 adopts LISTEN_FDS natively (its
//	                arbiter calls systemd.listen_fds(), which checks
//	                LISTEN_PID against its pid, and sock.create_sockets
//	                then uses fds 3.. and ignores every bind address, also
//	                the 0.0.0.0:$PORT default it derives from PORT), and it
//	                sends READY=1 to NOTIFY_SOCKET, so -ready notify works
//
// Controls, left out of the default SETUPS (for when a ratio needs
// explaining):
//
//	run-node-1w        forkline run -workers 1 -- node server.js: one Node
//	                   process on its own socket (what one worker serves)
//	node-cluster-none  node-cluster with NODE_CLUSTER_SCHED_POLICY=none: the
//	                   workers share the primary's socket and accept on it
//	                   themselves, the primary out of the path
//	run-go             forkline run -workers 2 -- peers/minprefork's worker
//	                   (net/http on fd 3, GOMAXPROCS=1): forkline run with a
//	                   program whose own cost per request is small
//
// Two loads: "close", `wrk -H "Connection: close"`, a new connection per
// request, so that with node-cluster every connection passes through
// Node's primary; and "keepalive", wrk's default, where the primary only
// hands over wrk's CONNS connections once. gunicorn's sync worker closes
// every connection (it does not do keep-alive), so the gunicorn setups run
// the close load only. Each measured run is preceded by WARMUP s of the
// same load, discarded, once all WORKERS workers have answered.
//
// Then, for each setup, a fresh server answers SHARES_N (2000) requests,
// each on a fresh connection, from SHARES_CLIENTS (4) concurrent clients;
// the answers name the pid that served them, which gives each worker
// process's share of the requests: how evenly the kernel (SO_REUSEPORT),
// the primary (round robin) or the race for accept() on a shared socket
// (gunicorn's workers) spreads new connections.
//
// stdout gets the results file's text, then, one per line:
//
//	run-node-ratio <x>            median of per-round ratios of req/s,
//	                              run-node ÷ node-cluster, Connection: close
//	run-node-keepalive-ratio <x>  the same with keep-alive
//	run-gunicorn-ratio <x>        run-gunicorn ÷ gunicorn, Connection: close
//	shares-<setup> <a> <b>        each worker process's share of the
//	                              SHARES_N requests, largest first
//
// Usage:  cd bench && go run ./run            (make bench-run)
//
// Knobs, as environment variables or as the flags in brackets:
//
//	ROUNDS=5 (-rounds)  DURATION=6 (-duration, seconds of each measured run)
//	WARMUP=1 (-warmup, seconds, discarded)  CONNS=64 (-conns)  THREADS=1 (-threads)
//	WORKERS=2 (-workers)  SHARES_N=2000 (-shares-n)  SHARES_CLIENTS=4 (-shares-clients)
//	SETUPS="run-node node-cluster gunicorn run-gunicorn" (-setups; controls:
//	  run-node-1w node-cluster-none run-go)
//	LOADS="close keepalive" (-loads)
//	STEERING= (-steering: forkline run's -steering; empty: its default, auto)
//	RESULTS=run.md (-results; in bench/results/, "" = none)
//	KEEP=1 (-keep): keep the temp dir (binaries, raw wrk output, logs)
//
// Every server runs in a session, and so a process group, of its own and
// is stopped by signalling that group, SIGTERM first and SIGKILL after
// 10 s; forkline's workers (in groups of their own) and gunicorn's must be
// gone too, and no socket may still listen on the run's port, before the
// next run starts on a port no socket uses.
package main

import (
	"fmt"
	"strings"

	"github.com/forkline/forkline/bench/internal/harness"
)

// config is the suite's knobs.
type config struct {
	rounds, seconds, warmup, conns, threads, workers, sharesN, sharesClients *int
	setups, loads, steering                                                  *string
}

func knobs() (*harness.Knobs, *config) {
	k := harness.NewKnobs("run", "forkline run against node cluster and gunicorn, interleaved rounds")
	c := &config{
		rounds:        k.Int("rounds", "ROUNDS", 5, 1, "interleaved rounds"),
		seconds:       k.Int("duration", "DURATION", 6, 1, "seconds of each measured wrk run"),
		warmup:        k.Int("warmup", "WARMUP", 1, 1, "seconds of wrk before each measured run, discarded"),
		conns:         k.Int("conns", "CONNS", 64, 1, "wrk connections"),
		threads:       k.Int("threads", "THREADS", 1, 1, "wrk threads"),
		workers:       k.Int("workers", "WORKERS", 2, 1, "workers per setup"),
		sharesN:       k.Int("shares-n", "SHARES_N", 2000, 0, "requests, each on a fresh connection, counted by the pid that answered (0: skip)"),
		sharesClients: k.Int("shares-clients", "SHARES_CLIENTS", 4, 1, "concurrent clients of the shares run"),
		setups:        k.String("setups", "SETUPS", strings.Join(defaultSetups, " "), "setups, in the order of odd rounds"),
		loads:         k.String("loads", "LOADS", "close keepalive", "loads: close (Connection: close) and/or keepalive"),
		steering:      k.String("steering", "STEERING", "", "forkline run's -steering (auto, off, required); empty: its default"),
	}
	k.Always("rounds", "duration", "warmup", "conns", "threads")
	return k, c
}

func main() {
	k, c := knobs()
	harness.Main(k, func(s *harness.Suite) error {
		if args := k.Args(); len(args) > 0 {
			return fmt.Errorf("unexpected arguments %q", args)
		}
		return run(s, c)
	})
}

// run is the suite: throughput rounds, shares, report.
func run(s *harness.Suite, c *config) error {
	b, err := newBench(s, c)
	if err != nil {
		return err
	}
	b.loadAvg = append(b.loadAvg, harness.LoadAvg())
	if err := b.throughput(); err != nil {
		return err
	}
	b.loadAvg = append(b.loadAvg, harness.LoadAvg())
	if err := b.shares(); err != nil {
		return err
	}
	b.loadAvg = append(b.loadAvg, harness.LoadAvg())
	text, err := s.WriteResults(b.report())
	fmt.Print(text)
	if err != nil {
		return err
	}
	fmt.Println()
	for _, line := range b.lines() {
		fmt.Println(line)
	}
	return nil
}
