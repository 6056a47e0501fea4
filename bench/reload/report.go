package main

import (
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strings"

	"github.com/forkline/forkline/bench/internal/load"
)

// results is what one run recorded.
type results struct {
	keepAlive                   bool
	clients                     int
	steadyStart, steadyEnd, end int64 // ns since the load started
	windows                     []window
	recs                        []load.Record
	stale                       int // idle connections found closed before reuse
}

func (r *results) failedReloads() int {
	n := 0
	for _, w := range r.windows {
		if w.err != nil {
			n++
		}
	}
	return n
}

// overlaps returns the index of the reload window that rec's interval
// overlaps, or -1.
func (r *results) overlaps(rec load.Record) int {
	for i, w := range r.windows {
		if rec.Start <= w.done && rec.End >= w.sent {
			return i
		}
	}
	return -1
}

// overlapsFixed says whether rec's interval overlaps [trigger, trigger+span]
// of any reload.
func (r *results) overlapsFixed(rec load.Record, span int64) bool {
	for _, w := range r.windows {
		if rec.Start <= w.sent+span && rec.End >= w.sent {
			return true
		}
	}
	return false
}

type latencies []float64 // ms

// pct is the nearest-rank percentile q.
func (l latencies) pct(q float64) float64 {
	if len(l) == 0 {
		return math.NaN()
	}
	slices.Sort(l)
	i := int(math.Ceil(q*float64(len(l)))) - 1
	return l[max(i, 0)]
}

func ms(ns int64) float64 { return float64(ns) / 1e6 }

// perWindow is what the requests overlapping one reload window saw.
type perWindow struct {
	reqs, failed int
	lat          latencies
	pids         map[int32]int
}

// summary is a run's requests sorted into the figures.
type summary struct {
	steady, inWin, inFixed, phase2 latencies
	perWin                         []perWindow
	kinds                          map[string]int
	failed, outsideFailed, conns   int
	failedRecs                     []load.Record
}

func (r *results) summarize(fixed int64) *summary {
	s := &summary{perWin: make([]perWindow, len(r.windows)), kinds: map[string]int{}}
	for _, rec := range r.recs {
		if !rec.Reused {
			s.conns++
		}
		ok := rec.OK()
		if !ok {
			s.failed++
			s.kinds[load.KindName(rec.Kind)]++
			s.failedRecs = append(s.failedRecs, rec)
		}
		lat := ms(rec.End - rec.Start)
		switch {
		case rec.Start >= r.steadyStart && rec.Start < r.steadyEnd && ok:
			s.steady = append(s.steady, lat)
		case rec.Start >= r.steadyEnd && ok:
			s.phase2 = append(s.phase2, lat)
		}
		if ok && r.overlapsFixed(rec, fixed) {
			s.inFixed = append(s.inFixed, lat)
		}
		s.window(r.overlaps(rec), rec, lat)
	}
	return s
}

// window counts rec in the reload window wi it overlaps (-1: none).
func (s *summary) window(wi int, rec load.Record, lat float64) {
	if wi < 0 {
		if !rec.OK() {
			s.outsideFailed++
		}
		return
	}
	pw := &s.perWin[wi]
	pw.reqs++
	if !rec.OK() {
		pw.failed++
		return
	}
	s.inWin = append(s.inWin, lat)
	pw.lat = append(pw.lat, lat)
	if pw.pids == nil {
		pw.pids = map[int32]int{}
	}
	pw.pids[rec.Pid]++
}

func (s *summary) kindList() []string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(s.kinds)) {
		out = append(out, fmt.Sprintf("%s=%d", k, s.kinds[k]))
	}
	return out
}

// report writes "key value" lines to out and a readable account to human.
func (r *results) report(out, human io.Writer, o options) {
	s := r.summarize(int64(o.fixed))
	r.keyValues(out, s, o)
	r.human(human, s, o)
}

func (r *results) keyValues(out io.Writer, s *summary, o options) {
	var winLen, readyLen latencies
	perReload := make([]string, len(r.windows))
	winReqs := 0
	for i, w := range r.windows {
		winLen = append(winLen, ms(w.done-w.sent))
		readyLen = append(readyLen, ms(w.ready-w.sent))
		perReload[i] = fmt.Sprint(s.perWin[i].failed)
		winReqs += s.perWin[i].reqs
	}
	kv := func(k string, v any) {
		if f, ok := v.(float64); ok {
			v = fmt.Sprintf("%.2f", f)
		}
		fmt.Fprintf(out, "%s %v\n", k, v)
	}
	kv("requests", len(r.recs))
	kv("failed", s.failed)
	kv("failed-kinds", orDash(strings.Join(s.kindList(), ",")))
	kv("failed-per-reload", orDash(strings.Join(perReload, ",")))
	kv("failed-outside-windows", s.outsideFailed)
	kv("reloads", len(r.windows)-r.failedReloads())
	kv("reloads-failed", r.failedReloads())
	kv("steady-requests", len(s.steady))
	kv("steady-p50-ms", s.steady.pct(0.50))
	kv("steady-p99-ms", s.steady.pct(0.99))
	kv("window-requests", winReqs)
	kv("reload-p50-ms", s.inWin.pct(0.50))
	kv("reload-p99-ms", s.inWin.pct(0.99))
	kv("reload-max-ms", s.inWin.pct(1))
	kv("fixed-window-ms", ms(int64(o.fixed)))
	kv("fixed-requests", len(s.inFixed))
	kv("fixed-p99-ms", s.inFixed.pct(0.99))
	kv("phase2-requests", len(s.phase2))
	kv("phase2-p99-ms", s.phase2.pct(0.99))
	kv("window-ms-median", winLen.pct(0.5))
	kv("window-ms-max", winLen.pct(1))
	kv("ready-ms-median", readyLen.pct(0.5))
	kv("connections", s.conns)
	kv("stale-reconnects", r.stale)
	kv("req-per-s", float64(len(r.recs))/(float64(r.end)/1e9))
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
