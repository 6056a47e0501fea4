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

// report is the results file.
func (b *bench) report() harness.Report {
	var body strings.Builder
	b.writeTable(&body)
	fmt.Fprintln(&body)
	fmt.Fprintln(&body, "Ratios (median over rounds of req/s; per-round ratios of the interleaved runs in brackets):")
	fmt.Fprintln(&body)
	b.writeRatios(&body)
	b.writeQuiet(&body)
	b.writeRequestPath(&body)
	b.writeRounds(&body)
	fmt.Fprintln(&body)
	body.WriteString(b.howToRead())
	tools := []string{"wrk"}
	for _, p := range b.peers {
		tools = append(tools, p.tools...)
		if slices.Contains(p.bins, "fasthttpprefork") || slices.Contains(p.bins, "forkline-fasthttp") {
			tools = append(tools, "fasthttp")
		}
	}
	slices.Sort(tools)
	return harness.Report{
		Title:  "forkline benchmark results",
		Tools:  slices.Compact(tools),
		Header: []string{b.loadLine(), "Load average (1/5/15 min): before " + b.loads[0] + ", after throughput " + b.loads[1] + ", after startup " + b.loads[2]},
		Body:   body.String(),
	}
}

func (b *bench) loadLine() string {
	c := b.c
	nc := ""
	if *c.newConn {
		nc = " -H 'Connection: close'"
	}
	cpus := fmt.Sprintf("wrk and the servers share the same %d CPUs", runtime.NumCPU())
	if *c.serverCPUs+*c.wrkCPUs != "" {
		cpus = fmt.Sprintf("servers on CPUs %s, wrk on CPUs %s (taskset)", orAny(*c.serverCPUs), orAny(*c.wrkCPUs))
	}
	return fmt.Sprintf("Load: `wrk --latency -t%d -c%d -d%ds%s http://127.0.0.1:<port>/` after a %ds warm-up that is discarded; %d interleaved rounds (even rounds in reverse order), a fresh server process per run; %d workers per peer; %s; forkline mode %s",
		*c.threads, *c.conns, *c.seconds, nc, *c.warmup, *c.rounds, *c.workers, cpus, *c.mode)
}

func orAny(s string) string {
	if s == "" {
		return "any"
	}
	return s
}

func mb(kb float64) string { return fmt.Sprintf("%.1f", kb/1024) }

// rps is the peer's req/s by round.
func (r *peerRes) rps() harness.PerRound {
	out := harness.PerRound{}
	for round, s := range r.runs {
		out[round] = s.wrk.RPS
	}
	return out
}

// each returns f of every run, in round order, skipping runs it rejects.
func (r *peerRes) each(f func(*sample) (float64, bool)) []float64 {
	var out []float64
	for _, round := range slices.Sorted(maps.Keys(r.runs)) {
		if v, ok := f(r.runs[round]); ok {
			out = append(out, v)
		}
	}
	return out
}

// perRequest is f of every run divided by the requests wrk completed.
func (r *peerRes) perRequest(f func(*sample) float64) []float64 {
	return r.each(func(s *sample) (float64, bool) { return f(s) / s.wrk.Requests, s.wrk.Requests > 0 })
}

func (b *bench) writeTable(w io.Writer) {
	n := *b.c.workers
	fmt.Fprintf(w, "| Peer (%d workers) | req/s, median | vs baseline | p99 latency, median | wrk errors | worker CPU per request, median | worker context switches per request, median | connections per worker | parent CPU during run | RSS parent, MB | RSS workers, MB | startup to %d workers serving, median ms |\n", n, n)
	fmt.Fprintln(w, "|---|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
	for _, p := range peers {
		if r := b.res[p.name]; r != nil {
			fmt.Fprintln(w, b.row(&p, r))
		}
	}
}

// row is one peer's line of the table.
func (b *bench) row(p *peer, r *peerRes) string {
	rps := r.rps().Median()
	rpsCell, ratio, p99, perReq, switches, conns := "—", "—", "—", "—", "—", "—"
	if len(r.runs) > 0 {
		rpsCell = fmt.Sprintf("%.0f", rps)
		if v := r.each(func(s *sample) (float64, bool) { return s.wrk.P99, s.wrk.P99 > 0 }); len(v) > 0 {
			p99 = fmt.Sprintf("%.2f ms", harness.Median(v))
		}
	}
	if base := b.res[p.baseline]; base != nil && len(base.runs) > 0 {
		ratio = fmt.Sprintf("%.3f × %s", rps/base.rps().Median(), labelOf(p.baseline))
	}
	if v := r.perRequest(func(s *sample) float64 { return s.serversMS * 1000 }); len(v) > 0 {
		perReq = fmt.Sprintf("%.1f µs", harness.Median(v))
	}
	if v := r.perRequest(func(s *sample) float64 { return s.csw }); len(v) > 0 {
		switches = fmt.Sprintf("%.2f", harness.Median(v))
	}
	var connRounds, rssRounds [][]float64
	errors := 0
	for _, s := range r.runs {
		errors += s.wrk.Errors
		if len(s.conns) > 0 {
			connRounds = append(connRounds, s.conns)
		}
		rssRounds = append(rssRounds, s.rssWorkers)
	}
	if len(connRounds) > 0 {
		conns = spread(connRounds, func(v float64) string { return fmt.Sprintf("%.0f", v) }, " / ")
	}
	cpu, rssPar, rssWork := b.parentCells(p, r, rssRounds)
	return fmt.Sprintf("| %s | %s | %s | %s | %d | %s | %s | %s | %s | %s | %s | %s |",
		p.label, rpsCell, ratio, p99, errors, perReq, switches, conns, cpu, rssPar, rssWork, startupCell(r.startups))
}

// parentCells are the parent's CPU and the RSS columns.
func (b *bench) parentCells(p *peer, r *peerRes, rssRounds [][]float64) (cpu, rssPar, rssWork string) {
	cpu, rssPar, rssWork = "—", "—", "—"
	rssParent := r.each(func(s *sample) (float64, bool) { return s.rssParent, true })
	if p.single {
		if len(rssParent) > 0 {
			rssWork = mb(harness.Median(rssParent)) + " (the one process)"
		}
		return "n/a (serves itself)", rssPar, rssWork
	}
	if len(r.runs) > 0 {
		ms := r.each(func(s *sample) (float64, bool) { return s.parentMS, true })
		pct := r.each(func(s *sample) (float64, bool) { return 100 * s.parentMS / s.wallMS, s.wallMS > 0 })
		cpu = fmt.Sprintf("%.0f ms (%.2f%%)", harness.Median(ms), harness.Median(pct))
		rssPar = mb(harness.Median(rssParent))
		rssWork = spread(rssRounds, mb, " + ")
	}
	return cpu, rssPar, rssWork
}

func startupCell(v []float64) string {
	if len(v) == 0 {
		return "—"
	}
	return fmt.Sprintf("%.1f (n=%d, %.1f–%.1f)", harness.Median(v), len(v), slices.Min(v), slices.Max(v))
}

// spread is the per-worker median of a per-round list of per-worker values,
// the workers sorted in each round so that "smallest" and "largest" line up
// across rounds.
func spread(rounds [][]float64, format func(float64) string, sep string) string {
	width := 0
	for _, ws := range rounds {
		width = max(width, len(ws))
	}
	if width == 0 {
		return "—"
	}
	cols := make([][]float64, width)
	for _, ws := range rounds {
		s := slices.Clone(ws)
		slices.Sort(s)
		for i, v := range s {
			cols[i] = append(cols[i], v)
		}
	}
	parts := make([]string, width)
	for i, c := range cols {
		parts[i] = format(harness.Median(c))
	}
	return strings.Join(parts, sep)
}
