package main

import (
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strings"
	"time"
)

// results is what one run recorded.
type results struct {
	t0                          time.Time
	keepAlive                   bool
	clients                     int
	steadyStart, steadyEnd, end int64 // ns since t0
	windows                     []window
	recs                        []record
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
func (r *results) overlaps(rec record) int {
	for i, w := range r.windows {
		if rec.start <= w.done && rec.end >= w.sent {
			return i
		}
	}
	return -1
}

// overlapsFixed says whether rec's interval overlaps [trigger, trigger+span]
// of any reload.
func (r *results) overlapsFixed(rec record, span int64) bool {
	for _, w := range r.windows {
		if rec.start <= w.sent+span && rec.end >= w.sent {
			return true
		}
	}
	return false
}

type latencies []float64 // ms

func (l latencies) pct(q float64) float64 {
	if len(l) == 0 {
		return math.NaN()
	}
	slices.Sort(l)
	i := int(math.Ceil(q*float64(len(l)))) - 1
	return l[max(i, 0)]
}

func ms(ns int64) float64 { return float64(ns) / 1e6 }

// report writes "key value" lines to out and a readable account to human.
func (r *results) report(out, human io.Writer, o options) {
	var steady, inWin, inFixed, phase2 latencies
	perWin := make([]struct {
		reqs, failed int
		lat          latencies
		pids         map[int32]int
	}, len(r.windows))
	kindCount := map[string]int{}
	var failed, outsideFailed, newConns int
	var failedRecs []record
	for _, rec := range r.recs {
		if !rec.reused {
			newConns++
		}
		wi := r.overlaps(rec)
		ok := rec.kind == 0
		if !ok {
			failed++
			kindCount[kindName(rec.kind)]++
			failedRecs = append(failedRecs, rec)
		}
		lat := ms(rec.end - rec.start)
		switch {
		case rec.start >= r.steadyStart && rec.start < r.steadyEnd && ok:
			steady = append(steady, lat)
		case rec.start >= r.steadyEnd && ok:
			phase2 = append(phase2, lat)
		}
		if ok && r.overlapsFixed(rec, int64(o.fixed)) {
			inFixed = append(inFixed, lat)
		}
		if wi >= 0 {
			pw := &perWin[wi]
			pw.reqs++
			if ok {
				inWin = append(inWin, lat)
				pw.lat = append(pw.lat, lat)
				if pw.pids == nil {
					pw.pids = map[int32]int{}
				}
				pw.pids[rec.pid]++
			} else {
				pw.failed++
			}
		} else if !ok {
			outsideFailed++
		}
	}
	var winLen, readyLen latencies
	perReload := make([]string, len(r.windows))
	winReqs := 0
	for i, w := range r.windows {
		winLen = append(winLen, ms(w.done-w.sent))
		readyLen = append(readyLen, ms(w.ready-w.sent))
		perReload[i] = fmt.Sprint(perWin[i].failed)
		winReqs += perWin[i].reqs
	}
	var kindList []string
	for _, k := range slices.Sorted(maps.Keys(kindCount)) {
		kindList = append(kindList, fmt.Sprintf("%s=%d", k, kindCount[k]))
	}
	secs := float64(r.end) / 1e9

	kv := func(k string, v any) {
		if f, ok := v.(float64); ok {
			v = fmt.Sprintf("%.2f", f)
		}
		fmt.Fprintf(out, "%s %v\n", k, v)
	}
	kv("requests", len(r.recs))
	kv("failed", failed)
	kv("failed-kinds", orDash(strings.Join(kindList, ",")))
	kv("failed-per-reload", orDash(strings.Join(perReload, ",")))
	kv("failed-outside-windows", outsideFailed)
	kv("reloads", len(r.windows)-r.failedReloads())
	kv("reloads-failed", r.failedReloads())
	kv("steady-requests", len(steady))
	kv("steady-p50-ms", steady.pct(0.50))
	kv("steady-p99-ms", steady.pct(0.99))
	kv("window-requests", winReqs)
	kv("reload-p50-ms", inWin.pct(0.50))
	kv("reload-p99-ms", inWin.pct(0.99))
	kv("reload-max-ms", inWin.pct(1))
	kv("fixed-window-ms", ms(int64(o.fixed)))
	kv("fixed-requests", len(inFixed))
	kv("fixed-p99-ms", inFixed.pct(0.99))
	kv("phase2-requests", len(phase2))
	kv("phase2-p99-ms", phase2.pct(0.99))
	kv("window-ms-median", winLen.pct(0.5))
	kv("window-ms-max", winLen.pct(1))
	kv("ready-ms-median", readyLen.pct(0.5))
	kv("connections", newConns)
	kv("stale-reconnects", r.stale)
	kv("req-per-s", float64(len(r.recs))/secs)

	mode := "a new connection per request"
	if r.keepAlive {
		mode = "keep-alive connections"
	}
	fmt.Fprintf(human, "reloadbench: %d clients, %s, %.1f s, %d requests (%.0f/s), %d failed\n",
		r.clients, mode, secs, len(r.recs), float64(len(r.recs))/secs, failed)
	if r.keepAlive {
		fmt.Fprintf(human, "  %d connections opened; %d idle connections found closed by the server before reuse (reconnected, not failures)\n", newConns, r.stale)
	}
	fmt.Fprintf(human, "  steady  [%.1f s, %.1f s): %d ok requests, p50 %.2f ms, p99 %.2f ms, max %.2f ms\n",
		ms(r.steadyStart)/1e3, ms(r.steadyEnd)/1e3, len(steady), steady.pct(.5), steady.pct(.99), steady.pct(1))
	fmt.Fprintf(human, "  reload windows: %d ok requests, p50 %.2f ms, p99 %.2f ms, max %.2f ms\n",
		len(inWin), inWin.pct(.5), inWin.pct(.99), inWin.pct(1))
	fmt.Fprintf(human, "  %v after each trigger: %d ok requests, p50 %.2f ms, p99 %.2f ms, max %.2f ms\n",
		o.fixed, len(inFixed), inFixed.pct(.5), inFixed.pct(.99), inFixed.pct(1))
	fmt.Fprintf(human, "  phase 2 (all after steady): %d ok requests, p99 %.2f ms\n", len(phase2), phase2.pct(.99))
	for i, w := range r.windows {
		pw := perWin[i]
		status := "ok"
		if w.err != nil {
			status = w.err.Error()
		}
		fmt.Fprintf(human, "  reload %2d at %6.3f s: ready +%6.1f ms, old exited +%6.1f ms; %5d requests, %d failed, p99 %6.2f ms, max %6.2f ms; old %v new %v; pids served %v; %s\n",
			i+1, ms(w.sent)/1e3, ms(w.ready-w.sent), ms(w.done-w.sent), pw.reqs, pw.failed,
			pw.lat.pct(.99), pw.lat.pct(1), w.old, w.fresh, pidCounts(pw.pids), status)
	}
	if failed > 0 {
		fmt.Fprintf(human, "  failure kinds: %s\n", strings.Join(kindList, ", "))
		slices.SortFunc(failedRecs, func(a, b record) int { return int(a.start - b.start) })
		for i, rec := range failedRecs {
			if i == o.details {
				fmt.Fprintf(human, "  ... %d more\n", len(failedRecs)-i)
				break
			}
			fmt.Fprintf(human, "  failed %-28s start %7.3f s, after %6.1f ms, reused conn %-5v %s\n",
				kindName(rec.kind), ms(rec.start)/1e3, ms(rec.end-rec.start), rec.reused, r.where(rec))
		}
	}
}

// where places a request relative to the nearest reload.
func (r *results) where(rec record) string {
	if i := r.overlaps(rec); i >= 0 {
		w := r.windows[i]
		return fmt.Sprintf("in reload %d: started at trigger%+.1f ms (ready at +%.1f ms, old exited at +%.1f ms), ended at trigger%+.1f ms",
			i+1, ms(rec.start-w.sent), ms(w.ready-w.sent), ms(w.done-w.sent), ms(rec.end-w.sent))
	}
	for i := len(r.windows) - 1; i >= 0; i-- {
		if w := r.windows[i]; rec.start > w.done {
			return fmt.Sprintf("%.1f ms after reload %d was done", ms(rec.start-w.done), i+1)
		}
	}
	if rec.start < r.steadyStart {
		return "warm-up"
	}
	return "steady phase"
}

func pidCounts(m map[int32]int) string {
	var s []string
	for _, pid := range slices.Sorted(maps.Keys(m)) {
		s = append(s, fmt.Sprintf("%d:%d", pid, m[pid]))
	}
	return "[" + strings.Join(s, " ") + "]"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
