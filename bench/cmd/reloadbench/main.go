// Command reloadbench measures what a zero-downtime reload costs the clients
// of a prefork HTTP server: failed requests, and latency while reloads run
// compared with steady state.
//
// It runs -clients closed-loop clients against -addr. Each opens a new TCP
// connection per request (HTTP/1.1 "GET -path", "Connection: close") or, with
// -keepalive, keeps its connection until the server answers with
// "Connection: close" (then it reconnects: not a failure); before reusing
// an idle connection it checks, without waiting, that the server has not
// closed it meanwhile (and reconnects if it has, as net/http's Transport
// and browsers do; -check-idle=false turns that off). Every request has
// a deadline of -timeout and is recorded with its start time, latency,
// outcome and the pid (and generation) in the hello body, "Hello from
// worker=<id> pid=<pid> gen=<gen>".
//
// Phases: -warmup (recorded, not in the latency figures), -steady (steady
// state), then -reloads reloads, each followed by a random pause in
// [-gap-min, -gap-max], then a -tail. One reload:
//
//  1. The children of -pid (the old generation) are listed.
//  2. The reload is triggered: with -cmd, that command is run (no shell),
//     e.g. "nginx -p DIR -c CONF -s reload"; without it, -signal is sent to
//     -pid.
//  3. It is "ready": with -log, when a line containing -ready appears in
//     that file after the trigger (forkline logs msg="reloaded" once the new
//     generation serves); without -log, when the command has exited and
//     -workers new children of -pid are running (nginx gives no ready
//     signal: its master starts the new workers, then asks the old ones to
//     quit gracefully).
//  4. It is "done" when every old child has exited.
//
// The reload window is [trigger, done]. A request belongs to a reload when
// its interval [start, end] overlaps the window; the "reload" latency
// figures are over those requests, the "fixed" ones over the requests that
// overlap [trigger, trigger + -fixed-window] (the same span whichever server
// is measured; keep it below -gap-min), the "phase2" ones over every request
// that started after the steady phase.
//
// Results go to stdout as "key value" lines, a human report to stderr.
// Every loop is bounded in count and in time (-max-requests, -max-time,
// -reload-timeout). It starts no process other than -cmd, and signals only
// -pid.
//
// Usage:
//
//	reloadbench -addr 127.0.0.1:8080 -pid 4242 -log hello.log -ready 'msg=reloaded'
//	reloadbench -addr 127.0.0.1:8081 -pid 4343 -workers 2 -cmd 'nginx -p DIR -c DIR/nginx.conf -s reload'
package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

type options struct {
	addr        string
	path        string
	clients     int
	keepAlive   bool
	think       time.Duration
	checkIdle   bool
	timeout     time.Duration
	warmup      time.Duration
	steady      time.Duration
	reloads     int
	gapMin      time.Duration
	gapMax      time.Duration
	tail        time.Duration
	fixed       time.Duration
	pid         int
	sig         string
	cmd         string
	logPath     string
	ready       string
	fail        string
	workers     int
	reloadLimit time.Duration
	maxRequests int
	maxTime     time.Duration
	seed        uint64
	details     int
}

func main() {
	var o options
	flag.StringVar(&o.addr, "addr", "", "server address (host:port)")
	flag.StringVar(&o.path, "path", "/", "request path; the answer must contain \"hello from ... pid=<pid>\"")
	flag.IntVar(&o.clients, "clients", 32, "concurrent closed-loop clients")
	flag.BoolVar(&o.keepAlive, "keepalive", false, "keep connections open (reconnect when the server says Connection: close)")
	flag.DurationVar(&o.think, "think", 0, "each client pauses a random time in [0, think] after each request (0: closed loop)")
	flag.BoolVar(&o.checkIdle, "check-idle", true, "with -keepalive, before reusing a connection check that the server has not closed it (and reconnect if it has), as real clients do")
	flag.DurationVar(&o.timeout, "timeout", 2*time.Second, "deadline of one request, connect included")
	flag.DurationVar(&o.warmup, "warmup", 500*time.Millisecond, "load before the steady phase, left out of the latency figures")
	flag.DurationVar(&o.steady, "steady", 3*time.Second, "steady phase")
	flag.IntVar(&o.reloads, "reloads", 20, "reloads in the reload phase")
	flag.DurationVar(&o.gapMin, "gap-min", 250*time.Millisecond, "shortest pause before each reload")
	flag.DurationVar(&o.gapMax, "gap-max", 500*time.Millisecond, "longest pause before each reload")
	flag.DurationVar(&o.fixed, "fixed-window", 200*time.Millisecond, "also report latency over [trigger, trigger+this] of every reload, the same span for every server")
	flag.DurationVar(&o.tail, "tail", 500*time.Millisecond, "load after the last reload is done")
	flag.IntVar(&o.pid, "pid", 0, "pid of the parent (forkline) or master (nginx) process")
	flag.StringVar(&o.sig, "signal", "HUP", "signal sent to -pid to reload, when -cmd is empty")
	flag.StringVar(&o.cmd, "cmd", "", "reload command, split on spaces, run without a shell")
	flag.StringVar(&o.logPath, "log", "", "the server's log file: ready when a line with -ready appears in it")
	flag.StringVar(&o.ready, "ready", `msg=reloaded`, "log text that says a reload is complete (with -log)")
	flag.StringVar(&o.fail, "fail", `reload failed`, "log text that says a reload failed (with -log)")
	flag.IntVar(&o.workers, "workers", 2, "worker processes per generation")
	flag.DurationVar(&o.reloadLimit, "reload-timeout", 15*time.Second, "bound on one reload, from trigger to done")
	flag.IntVar(&o.maxRequests, "max-requests", 5_000_000, "bound on requests recorded (32 bytes each)")
	flag.DurationVar(&o.maxTime, "max-time", 5*time.Minute, "bound on the whole run")
	flag.Uint64Var(&o.seed, "seed", 1, "seed of the random pauses")
	flag.IntVar(&o.details, "details", 40, "failed requests listed one by one in the report")
	flag.Parse()

	if err := o.check(); err != nil {
		fmt.Fprintln(os.Stderr, "reloadbench:", err)
		flag.Usage()
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.maxTime)
	defer cancel()
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	res, err := run(ctx, o)
	if res != nil {
		res.report(os.Stdout, os.Stderr, o)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "reloadbench:", err)
		os.Exit(1)
	}
}

func (o *options) check() error {
	switch {
	case o.addr == "":
		return fmt.Errorf("-addr is required")
	case o.pid <= 0:
		return fmt.Errorf("-pid is required")
	case o.clients < 1 || o.workers < 1 || o.reloads < 0:
		return fmt.Errorf("-clients and -workers must be at least 1, -reloads at least 0")
	case o.gapMax < o.gapMin:
		return fmt.Errorf("-gap-max %v is below -gap-min %v", o.gapMax, o.gapMin)
	case o.timeout <= 0 || o.reloadLimit <= 0:
		return fmt.Errorf("-timeout and -reload-timeout must be positive")
	}
	if o.cmd == "" {
		if _, err := parseSignal(o.sig); err != nil {
			return err
		}
	}
	return nil
}

func parseSignal(name string) (syscall.Signal, error) {
	switch strings.TrimPrefix(strings.ToUpper(name), "SIG") {
	case "HUP":
		return syscall.SIGHUP, nil
	case "USR1":
		return syscall.SIGUSR1, nil
	case "USR2":
		return syscall.SIGUSR2, nil
	}
	return 0, fmt.Errorf("-signal %q: want HUP, USR1 or USR2", name)
}

// run drives one benchmark: load, steady phase, reloads, tail.
func run(ctx context.Context, o options) (*results, error) {
	if err := waitServing(ctx, o.addr, o.workers, 10*time.Second); err != nil {
		return nil, err
	}
	trig, err := newTrigger(o)
	if err != nil {
		return nil, err
	}
	defer trig.close()

	ld := newLoad(o)
	ld.start()
	res := &results{t0: ld.t0, keepAlive: o.keepAlive, clients: o.clients}
	var runErr error
	func() {
		res.steadyStart = ld.since(time.Now().Add(o.warmup))
		if !sleep(ctx, o.warmup+o.steady) {
			runErr = ctx.Err()
			return
		}
		res.steadyEnd = ld.since(time.Now())
		rng := rand.New(rand.NewPCG(o.seed, 0x5eed))
		for i := range o.reloads {
			gap := o.gapMin
			if o.gapMax > o.gapMin {
				gap += time.Duration(rng.Int64N(int64(o.gapMax - o.gapMin)))
			}
			if !sleep(ctx, gap) {
				runErr = ctx.Err()
				return
			}
			w := trig.reload(ctx, o.reloadLimit)
			w.sent, w.ready, w.done = ld.since(w.sentAt), ld.since(w.readyAt), ld.since(w.doneAt)
			res.windows = append(res.windows, w)
			if w.err != nil {
				fmt.Fprintf(os.Stderr, "reloadbench: reload %d: %v\n", i+1, w.err)
				if ctx.Err() != nil {
					runErr = ctx.Err()
					return
				}
			}
		}
		sleep(ctx, o.tail)
	}()
	res.end = ld.since(time.Now())
	res.recs = ld.stop()
	res.stale = ld.stale
	if runErr == nil {
		for _, w := range res.windows {
			if w.err != nil {
				runErr = fmt.Errorf("%d of %d reloads did not complete", res.failedReloads(), len(res.windows))
				break
			}
		}
	}
	return res, runErr
}

// sleep waits d, or less when ctx ends; it reports whether ctx is still live.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
