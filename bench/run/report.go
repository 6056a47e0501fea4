package main

import (
	"fmt"
	"io"
	"maps"
	"runtime"
	"slices"
	"strings"

	"github.com/forkline/forkline/bench/internal/harness"
)

// quietLimit is how much of the CPUs other processes may have taken during
// a run for it to count as undisturbed.
const quietLimit = 5.0

// rps is a case's req/s by round.
func (b *bench) rps(k kase) harness.PerRound {
	out := harness.PerRound{}
	for r, s := range b.res[k] {
		out[r] = s.wrk.RPS
	}
	return out
}

// each returns f of every run of k, in round order.
func (b *bench) each(k kase, f func(*sample) (float64, bool)) []float64 {
	var out []float64
	for _, r := range slices.Sorted(maps.Keys(b.res[k])) {
		if v, ok := f(b.res[k][r]); ok {
			out = append(out, v)
		}
	}
	return out
}

// ratio is a comparison measured: the per-round ratios and their median.
type ratio struct {
	comparison
	rounds []int
	per    []float64
	median float64
	// quietRounds and quiet are the same over the rounds in which neither
	// run was disturbed by other processes.
	quietRounds []int
	quiet       []float64
}

func (b *bench) ratios() []ratio {
	var out []ratio
	for _, c := range comparisons {
		ka, kb := kase{c.a, c.load}, kase{c.b, c.load}
		if len(b.res[ka]) == 0 || len(b.res[kb]) == 0 {
			continue
		}
		rr := ratio{comparison: c}
		rr.rounds, rr.per = harness.Ratios(b.rps(ka), b.rps(kb), nil)
		rr.median = harness.Median(rr.per)
		rr.quietRounds, rr.quiet = harness.Ratios(b.rps(ka), b.rps(kb), func(r int) bool {
			return b.res[ka][r].other < quietLimit && b.res[kb][r].other < quietLimit
		})
		out = append(out, rr)
	}
	return out
}

// lines are what stdout ends with.
func (b *bench) lines() []string {
	var out []string
	for _, r := range b.ratios() {
		if r.line != "" && len(r.per) > 0 {
			out = append(out, fmt.Sprintf("%s %.3f", r.line, r.median))
		}
	}
	for _, st := range b.setups {
		if sr := b.shared[st.name]; sr != nil {
			out = append(out, fmt.Sprintf("shares-%s %s", st.name, formatShares(sr, " ")))
		}
	}
	return out
}

// report is the results file.
func (b *bench) report() harness.Report {
	var w strings.Builder
	b.writeRatios(&w)
	b.writeTable(&w)
	b.writeRounds(&w)
	b.writeShares(&w)
	b.writeNotes(&w)
	tools := []string{"wrk"}
	for _, st := range b.setups {
		tools = append(tools, st.tools...)
	}
	slices.Sort(tools)
	return harness.Report{
		Title: "forkline run: node and gunicorn under forkline run against their own clusters",
		Tools: slices.Compact(tools),
		Header: []string{b.loadLine(),
			"Load average (1/5/15 min): before " + b.loadAvg[0] + ", after throughput " + b.loadAvg[1] + ", after shares " + b.loadAvg[len(b.loadAvg)-1]},
		Body: w.String(),
	}
}

func (b *bench) loadLine() string {
	c := b.c
	var cases []string
	for _, k := range b.cases {
		cases = append(cases, k.String())
	}
	return fmt.Sprintf("Load: `wrk --latency -t%d -c%d -d%ds [-H 'Connection: close'] http://127.0.0.1:<port>/` after a %ds warm-up of the same load that is discarded; "+
		"%d interleaved rounds (even rounds in reverse order), a fresh server per run, once its %d workers have all answered; "+
		"wrk and the servers share the same %d CPUs; runs of a round: %s",
		*c.threads, *c.conns, *c.seconds, *c.warmup, *c.rounds, *c.workers, runtime.NumCPU(), strings.Join(cases, ", "))
}

func formatRatios(v []float64) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = fmt.Sprintf("%.3f", x)
	}
	return strings.Join(s, ", ")
}

func (b *bench) writeRatios(w io.Writer) {
	fmt.Fprintln(w, "## Ratios")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "req/s of the first over the second in the same round; the median of the per-round ratios, the per-round ratios in brackets (round 1 first), and the same over the undisturbed rounds only (other processes below 5% of the CPUs in both runs).")
	fmt.Fprintln(w)
	for _, r := range b.ratios() {
		name := ""
		if r.line != "" {
			name = "`" + r.line + "` "
		}
		quiet := "none"
		if len(r.quiet) > 0 {
			quiet = fmt.Sprintf("%.3f over rounds %s", harness.Median(r.quiet), joinInts(r.quietRounds))
		}
		fmt.Fprintf(w, "- %s%s ÷ %s, %s: **%.3f** [%s]; undisturbed: %s\n",
			name, r.a, r.b, loadName(r.load), r.median, formatRatios(r.per), quiet)
	}
	fmt.Fprintln(w)
}

func loadName(l string) string {
	if l == "close" {
		return "Connection: close"
	}
	return "keep-alive"
}

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = fmt.Sprint(x)
	}
	return strings.Join(s, ",")
}

func (b *bench) writeTable(w io.Writer) {
	fmt.Fprintln(w, "## Throughput")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| Setup | load | req/s, median | p99 latency, median | wrk errors | parent CPU, % of one CPU, median | CPU per request, all its processes, median | other processes, % of the CPUs, median |")
	fmt.Fprintln(w, "|---|---|--:|--:|--:|--:|--:|--:|")
	for _, l := range b.loads {
		for _, st := range setups {
			k := kase{st.name, l}
			if len(b.res[k]) == 0 {
				continue
			}
			errs := 0
			for _, s := range b.res[k] {
				errs += s.wrk.Errors
			}
			p99 := b.each(k, func(s *sample) (float64, bool) { return s.wrk.P99, s.wrk.P99 > 0 })
			parent := b.each(k, func(s *sample) (float64, bool) { return 100 * s.parentMS / s.wallMS, s.wallMS > 0 })
			perReq := b.each(k, func(s *sample) (float64, bool) { return 1000 * s.serversMS / s.wrk.Requests, s.wrk.Requests > 0 })
			other := b.each(k, func(s *sample) (float64, bool) { return s.other, true })
			fmt.Fprintf(w, "| %s (`%s`) | %s | %.0f | %.2f ms | %d | %.1f%% | %.1f µs | %.1f%% |\n",
				st.label, st.name, loadName(l), b.rps(k).Median(), harness.Median(p99), errs,
				harness.Median(parent), harness.Median(perReq), harness.Median(other))
		}
	}
	fmt.Fprintln(w)
}

// writeRounds is every run's req/s, by round, in the order the round ran.
func (b *bench) writeRounds(w io.Writer) {
	fmt.Fprintln(w, "## Per round")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "req/s of each run (other processes' share of the CPUs in brackets); odd rounds ran left to right, even rounds right to left.")
	fmt.Fprintln(w)
	fmt.Fprint(w, "| round |")
	for _, k := range b.cases {
		fmt.Fprintf(w, " %s |", k)
	}
	fmt.Fprintln(w)
	fmt.Fprint(w, "|--:|")
	for range b.cases {
		fmt.Fprint(w, "--:|")
	}
	fmt.Fprintln(w)
	for r := 1; r <= *b.c.rounds; r++ {
		fmt.Fprintf(w, "| %d |", r)
		for _, k := range b.cases {
			if s := b.res[k][r]; s != nil {
				fmt.Fprintf(w, " %.0f (%.0f%%) |", s.wrk.RPS, s.other)
			} else {
				fmt.Fprint(w, " — |")
			}
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w)
}

func (b *bench) writeShares(w io.Writer) {
	if len(b.shared) == 0 {
		return
	}
	fmt.Fprintln(w, "## Shares of the requests per worker process")
	fmt.Fprintln(w)
	fmt.Fprintf(w, "%d requests, each on a fresh connection (`Connection: close`), from %d concurrent clients, to a fresh, warmed-up server; each answer names the pid that served it.\n\n",
		*b.c.sharesN, *b.c.sharesClients)
	fmt.Fprintln(w, "| Setup | pids that answered | shares, largest first | answers by pid | failed |")
	fmt.Fprintln(w, "|---|--:|---|---|--:|")
	for _, st := range setups {
		sr := b.shared[st.name]
		if sr == nil {
			continue
		}
		var by []string
		for _, pid := range slices.Sorted(maps.Keys(sr.byPid)) {
			who := ""
			if pid == sr.parent {
				who = " (the parent!)"
			}
			by = append(by, fmt.Sprintf("%d: %d%s", pid, sr.byPid[pid], who))
		}
		fmt.Fprintf(w, "| %s (`%s`) | %d | %s | %s | %d |\n", st.label, st.name, len(sr.byPid), formatShares(sr, " / "), strings.Join(by, ", "), sr.errors)
	}
	fmt.Fprintln(w)
}

func (b *bench) writeNotes(w io.Writer) {
	fmt.Fprintln(w, "## Setups")
	fmt.Fprintln(w)
	for _, st := range b.setups {
		argv, env := st.argv(b, "127.0.0.1:<port>")
		for i, a := range argv {
			argv[i] = strings.ReplaceAll(a, b.s.Work+"/bin/", "")
			argv[i] = strings.ReplaceAll(argv[i], b.s.Bench+"/", "bench/")
		}
		e := ""
		if len(env) > 0 {
			e = strings.Join(env, " ") + " "
		}
		fmt.Fprintf(w, "- `%s`: `%s%s` (in bench/run/)\n", st.name, e, strings.Join(argv, " "))
	}
	if len(b.notes) > 0 {
		fmt.Fprintln(w)
		fmt.Fprintln(w, "forkline's log said:", strings.Join(quoteAll(b.notes), "; "))
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "- *parent CPU*: utime+stime of the process the suite started (forkline's parent, Node's primary, gunicorn's master) over the measured run, as a share of the run's wall time. Node's primary accepts every connection in SCHED_RR mode and passes it to a worker over IPC, so under `Connection: close` it is in the path of every request; forkline's parent and gunicorn's master are not.")
	fmt.Fprintln(w, "- *CPU per request*: the CPU time of every process of the server (the parent, the workers, gunicorn's masters under forkline run) over the run, divided by the requests wrk completed.")
	fmt.Fprintln(w, "- *other processes*: all the machine's busy CPU time during the run minus the server's and wrk's: what the shared machine's other tenants took.")
	fmt.Fprintln(w, "- gunicorn 20.1 under forkline run: its arbiter adopts the sockets of LISTEN_FDS when LISTEN_PID is its own pid (forkline's worker execs gunicorn in place, so it is), and then binds nothing: `create_sockets` returns the fd listeners alone and ignores every bind address, including the `0.0.0.0:$PORT` default it derives from PORT. No -b is needed, and none would be used. It sends READY=1 to NOTIFY_SOCKET once the arbiter has booted (before it forks its worker; connections in between wait in the backlog), so forkline run's default `-ready notify` works.")
}

func quoteAll(v []string) []string {
	out := make([]string, len(v))
	for i, s := range v {
		out[i] = "`" + s + "`"
	}
	return out
}
