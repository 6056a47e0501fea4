package main

import (
	"fmt"
	"strings"
)

// howToRead explains the table's columns.
func (b *bench) howToRead() string {
	c := b.c
	node := fmt.Sprintf("wrk keeps its %d connections open, so little shows here (NEW_CONN=1 shows it).", *c.conns)
	if *c.newConn {
		node = "with a new connection per request (NEW_CONN=1) that shows."
	}
	lines := []string{
		"*parent CPU during run*: utime+stime of the parent/primary/master process (from `/proc/<pid>/stat`, 10 ms ticks) over the measured wrk run, and that as a share of the run's wall time. forkline's parent is not in the request path, so it should stay at ~0. Node's primary accepts every connection in its default round-robin mode: " + node,
		"*worker CPU per request*: utime+stime of all workers (of the one process for net/http) over the measured run, divided by the requests wrk completed; less sensitive than req/s to CPU taken by other jobs on a shared machine (not immune: caches and SMT siblings are shared too).",
		"*worker context switches per request*: voluntary and involuntary context switches of every thread of the workers (of the one process for net/http) over the measured run, from `/proc/<pid>/task/*/status`, divided by the requests wrk completed.",
		fmt.Sprintf("*connections per worker*: wrk's %d connections as the kernel spread them over the worker processes (by `ss`, 1 s into the run), median over rounds, smallest first.", *c.conns),
		"*RSS*: VmRSS right after the measured run, median over rounds; workers are listed smallest first.",
		fmt.Sprintf("*startup*: measured from outside (bench/internal/harness WaitDistinct), from just before exec until %d distinct worker pids have answered on fresh connections (1 pid for the single net/http process and for the 1-worker control); %d samples per peer, interleaved.", *c.workers, *c.startupN),
		"fasthttp/prefork starts runtime.GOMAXPROCS(0) children; its peer sets the master's GOMAXPROCS to the worker count with runtime.GOMAXPROCS (each child then runs with GOMAXPROCS=1, set by fasthttp/prefork). fasthttp/prefork passes no worker index, so its body says worker=0.",
		"*other processes* (per-run table): CPU time that processes other than the servers, wrk and the suite took during the run, as a share of all CPUs (busy time from `/proc/stat` minus theirs). Runs where it is high are disturbed.",
		"The machine is shared and noisy: trust ratios of interleaved rounds more than absolute figures. The load average includes the benchmark itself (wrk plus the busy server threads count for about 3).",
	}
	if b.res[requestPathControl] != nil {
		lines = append(lines, "*minimal prefork* (bench/peers/minprefork): the least a prefork can do, the control for forkline's request path: the parent binds one plain-TCP SO_REUSEPORT socket per worker and starts that many copies of itself, each serving net/http on its socket with GOMAXPROCS=1; no supervision, no drain, no messages. *request path* is forkline + net/http's req/s over it, round by round; at 1.000 forkline's request path costs nothing over a bare prefork.")
	}
	return "How to read it:\n\n- " + strings.Join(lines, "\n- ") + "\n"
}
