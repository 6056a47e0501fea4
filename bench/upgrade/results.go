package main

import (
	"fmt"
	"runtime"
	"strings"

	"github.com/forkline/forkline/bench/internal/harness"
)

// get is key of run's figures; "-" if it has none.
func (u *suite) get(run, key string) string {
	if v, ok := u.kv[run][key]; ok {
		return v
	}
	return "-"
}

// lines are the suite's figures, one "key value" per line.
func (u *suite) lines() []string {
	var out []string
	for _, run := range u.runs {
		prefix := ""
		if run != "fresh" {
			prefix = run + "-"
		}
		for _, k := range [][2]string{
			{"upgrade-failed", "failed-of"},
			{"upgrades-completed", "upgrades-completed"},
			{"upgrade-ms p50/max", "upgrade-ms"},
			{"upgrade-signal-ms p50/max", "signal-ms"},
			{"upgrade-preflight-ms p50/max", "preflight-ms"},
			{"upgrade-exec-ms p50/max", "exec-ms"},
			{"upgrade-exec-to-first-line-ms p50/max", "exec-first-line-ms"},
			{"upgrade-p99-ms", "upgrade-p99-ms"},
			{"steady-p99-ms", "steady-p99-ms"},
			{"upgrade-p99-ratio", "upgrade-p99-ratio"},
			{"check-parent-pid", "check-parent-pid"},
			{"check-worker-pids", "check-worker-pids"},
			{"check-exe", "check-exe"},
		} {
			out = append(out, prefix+k[0]+" "+u.get(run, k[1]))
		}
	}
	return out
}

// finish prints the figures and writes the results file.
func (u *suite) finish() error {
	lines := strings.Join(u.lines(), "\n") + "\n"
	fmt.Print(lines)
	var body strings.Builder
	fmt.Fprintf(&body, "```\n%s```\n\n%s\n", lines, u.howToRead())
	for _, r := range u.runs {
		fmt.Fprintf(&body, "## %s\n\n```\n%s```\n\n", r, u.reports[r])
	}
	o := u.c.base
	_, err := u.s.WriteResults(harness.Report{
		Title: "Upgrade benchmark: the parent upgraded in place (SIGUSR2)",
		Header: []string{
			fmt.Sprintf("Server: examples/hello, %d workers on 127.0.0.1, run from a deploy path; builds A and B are the same binary with a different mark appended; before each upgrade the other build is installed there by rename (a copy, then rename(2)), then SIGUSR2 goes to the parent; B, A, B, ... so that the last is A", o.workers),
			fmt.Sprintf("Load: %d closed-loop clients (bench/internal/load), HTTP/1.1 GET %s, per-request timeout %v; runs %s, a fresh server for each (fresh: a new connection per request, `Connection: close`; keepalive: connections kept); %vs warm-up, %vs steady, %d upgrades each after a random %v-%v pause, %v tail; client and server share the same %d CPUs",
				o.clients, o.path, o.timeout, strings.Join(u.runs, ", "), o.warmup.Seconds(), o.steady.Seconds(), o.upgrades, o.gapMin, o.gapMax, o.tail, runtime.NumCPU()),
		},
		Body: body.String(),
	})
	if err != nil {
		return err
	}
	if u.failures > 0 {
		return fmt.Errorf("%d run(s) failed", u.failures)
	}
	return nil
}

func (u *suite) howToRead() string {
	lines := []string{
		"*upgrade-failed n of m*: requests that got no `200 Hello ...` answer within the timeout (refused, reset, EOF before the answer, timeout, another status), of every request of the run (warm-up, steady phase, upgrades, tail).",
		"*upgrades-completed*: upgrades that ended in `upgraded in place` (not refused, rolled back or timed out); the timings are over those.",
		"*upgrade-ms*: from SIGUSR2 sent to the bench reading the parent's `upgraded in place` line (the log is followed with inotify, so a line is read as it is written, unless the bench itself waits for a CPU). The split is by the log's own stamps (millisecond resolution, the same wall clock as the bench's): *signal* (SIGUSR2 sent → `upgrading the parent in place`: the signal's way to the supervisor's loop), *preflight* (→ `upgrade: executing the new parent`: the new binary run in its check mode, then every worker channel detached at a frame boundary) and *exec* (→ `upgraded in place`: execve, the new image's start, its adoption of the sockets, channels and workers). *exec-to-first-line*: from `upgrade: executing the new parent` to the first line the new image wrote, an upper bound on the span in which the new image has no signal handler of its own yet (a SIGTERM or SIGQUIT there would kill it; see execOnSpawner). The report splits it at the moment the bench saw /proc/<pid>/exe become the new file (looked at every ms after the exec line is read): before it the old image still runs (execve has not passed its point of no return), after it the new image starts (Go's runtime, the package inits, the state read, the sockets adopted). The per-upgrade lines give each step's stamp, and in brackets when the bench read it.",
		"*upgrade window*: [SIGUSR2 sent, `upgraded in place` read]. *upgrade-p99-ms*: p99 latency of the successful requests whose [start, end] overlaps a window; *steady-p99-ms*: those started in the steady phase; *ratio*: the first over the second. The workers serve on through an upgrade (the parent is not in the request path), so what the window costs is CPU: the preflight process and the new image's start on the same CPUs as the clients and the workers.",
		"*check-parent-pid*: after each upgrade the parent has the same pid and the same start time (/proc/<pid>/stat), and the `upgraded in place` line names it. *check-worker-pids*: after each upgrade the parent's children are the same pids with the same start times as before the first, and every answer of the run came from one of them, all of generation 1. *check-exe*: after each upgrade /proc/<pid>/exe is the file just installed (the same inode) and ends with that build's mark; at the end it is the file at the deploy path, the build installed last.",
		"The machine is shared and noisy: compare runs made one after the other.",
	}
	return "How to read it:\n\n- " + strings.Join(lines, "\n- ") + "\n"
}
