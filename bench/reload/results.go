package main

import (
	"fmt"
	"runtime"
	"slices"
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
	add := func(run, prefix string, keys ...[2]string) {
		if !slices.Contains(u.runs, run) {
			return
		}
		for _, k := range keys {
			out = append(out, prefix+k[0]+" "+u.get(run, k[1]))
		}
	}
	add("forkline", "", [2]string{"reload-failed", "failed"}, [2]string{"reload-requests", "requests"},
		[2]string{"reload-p99-ms", "reload-p99-ms"}, [2]string{"steady-p99-ms", "steady-p99-ms"},
		[2]string{"reload-phase2-p99-ms", "phase2-p99-ms"}, [2]string{"reload-200ms-p99-ms", "fixed-p99-ms"})
	add("nginx", "nginx-", [2]string{"reload-failed", "failed"}, [2]string{"reload-requests", "requests"},
		[2]string{"reload-p99-ms", "reload-p99-ms"}, [2]string{"steady-p99-ms", "steady-p99-ms"},
		[2]string{"reload-phase2-p99-ms", "phase2-p99-ms"}, [2]string{"reload-200ms-p99-ms", "fixed-p99-ms"})
	add("keepalive", "keepalive-", [2]string{"reload-failed", "failed"}, [2]string{"reload-requests", "requests"},
		[2]string{"reload-p99-ms", "reload-p99-ms"}, [2]string{"steady-p99-ms", "steady-p99-ms"})
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
		Title: "Reload benchmark",
		Tools: []string{"nginx"},
		Header: []string{fmt.Sprintf("Load: %d closed-loop clients (bench/internal/load), HTTP/1.1 GET %s, per-request timeout %v; a new connection per request (`Connection: close`) except in the keepalive run; %vs warm-up, %vs steady, %d reloads each after a random %v-%v pause, %v tail; the runs one after the other (%s), a fresh server for each; client and servers share the same %d CPUs; %d workers per server",
			o.clients, o.path, o.timeout, o.warmup.Seconds(), o.steady.Seconds(), o.reloads, o.gapMin, o.gapMax, o.tail,
			strings.Join(u.runs, ", "), runtime.NumCPU(), o.workers)},
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
	o := u.c.base
	lines := []string{
		"*failed*: requests that got no `200 Hello ...` answer within the timeout (refused, reset, EOF before the answer, timeout, another status), over the whole run: warm-up, steady phase and reloads. *requests*: every request of the run.",
		fmt.Sprintf("*reload window*: from the reload's trigger (SIGHUP sent; `nginx -s reload` started) until every worker of the old generation has exited (polled every 2 ms in /proc). *reload-p99-ms*: p99 latency of the successful requests whose interval [start, end] overlaps a reload window. *phase2-p99-ms*: every successful request started after the steady phase (windows and the pauses between them). *reload-200ms-p99-ms*: successful requests overlapping the first %v after each trigger, a span that is the same for both servers (forkline's windows last ~10-40 ms, nginx's ~110 ms: its master waits 100 ms after starting the new workers before it tells the old ones to quit). *steady-p99-ms*: successful requests started in the steady phase. Latency runs from before connect to the last byte of the body.", o.fixed),
		fmt.Sprintf("Ready: forkline when the parent logs `msg=reloaded` (the whole new generation accepts); nginx has no such signal, so when `nginx -s reload` has exited and %d new worker processes run under the master.", o.workers),
		"keepalive: a `Connection: close` answer makes the client reconnect, not a failure; so does an idle connection found closed by the server before reuse (checked with a non-blocking `recv(MSG_PEEK)`, as net/http's Transport notices it); a failure on a connection that had served requests before (`reused conn true` in the report) is one. The clients send their next request at once, so connections are never idle for long.",
		"The machine is shared and noisy: compare runs made one after the other.",
	}
	return "How to read it:\n\n- " + strings.Join(lines, "\n- ") + "\n"
}
