package main

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"github.com/forkline/forkline/bench/internal/load"
)

// human writes the readable account of a run.
func (r *results) human(w io.Writer, s *summary, o options) {
	secs := float64(r.end) / 1e9
	mode := "a new connection per request"
	if r.keepAlive {
		mode = "keep-alive connections"
	}
	fmt.Fprintf(w, "load: %d clients, %s, %.1f s, %d requests (%.0f/s), %d failed\n",
		r.clients, mode, secs, len(r.recs), float64(len(r.recs))/secs, s.failed)
	if r.keepAlive {
		fmt.Fprintf(w, "  %d connections opened; %d idle connections found closed by the server before reuse (reconnected, not failures)\n", s.conns, r.stale)
	}
	fmt.Fprintf(w, "  steady  [%.1f s, %.1f s): %d ok requests, p50 %.2f ms, p99 %.2f ms, max %.2f ms\n",
		ms(r.steadyStart)/1e3, ms(r.steadyEnd)/1e3, len(s.steady), s.steady.pct(.5), s.steady.pct(.99), s.steady.pct(1))
	fmt.Fprintf(w, "  reload windows: %d ok requests, p50 %.2f ms, p99 %.2f ms, max %.2f ms\n",
		len(s.inWin), s.inWin.pct(.5), s.inWin.pct(.99), s.inWin.pct(1))
	fmt.Fprintf(w, "  %v after each trigger: %d ok requests, p50 %.2f ms, p99 %.2f ms, max %.2f ms\n",
		o.fixed, len(s.inFixed), s.inFixed.pct(.5), s.inFixed.pct(.99), s.inFixed.pct(1))
	fmt.Fprintf(w, "  phase 2 (all after steady): %d ok requests, p99 %.2f ms\n", len(s.phase2), s.phase2.pct(.99))
	for i, win := range r.windows {
		pw := s.perWin[i]
		status := "ok"
		if win.err != nil {
			status = win.err.Error()
		}
		fmt.Fprintf(w, "  reload %2d at %6.3f s: ready +%6.1f ms, old exited +%6.1f ms; %5d requests, %d failed, p99 %6.2f ms, max %6.2f ms; old %v new %v; pids served %v; %s\n",
			i+1, ms(win.sent)/1e3, ms(win.ready-win.sent), ms(win.done-win.sent), pw.reqs, pw.failed,
			pw.lat.pct(.99), pw.lat.pct(1), win.old, win.fresh, pidCounts(pw.pids), status)
	}
	if s.failed > 0 {
		r.failures(w, s, o.detail)
	}
}

// failures lists the failed requests, up to detail of them.
func (r *results) failures(w io.Writer, s *summary, detail int) {
	fmt.Fprintf(w, "  failure kinds: %s\n", strings.Join(s.kindList(), ", "))
	slices.SortFunc(s.failedRecs, func(a, b load.Record) int { return int(a.Start - b.Start) })
	for i, rec := range s.failedRecs {
		if i == detail {
			fmt.Fprintf(w, "  ... %d more\n", len(s.failedRecs)-i)
			break
		}
		fmt.Fprintf(w, "  failed %-28s start %7.3f s, after %6.1f ms, reused conn %-5v %s\n",
			load.KindName(rec.Kind), ms(rec.Start)/1e3, ms(rec.End-rec.Start), rec.Reused, r.where(rec))
	}
}

// where places a request relative to the nearest reload.
func (r *results) where(rec load.Record) string {
	if i := r.overlaps(rec); i >= 0 {
		w := r.windows[i]
		return fmt.Sprintf("in reload %d: started at trigger%+.1f ms (ready at +%.1f ms, old exited at +%.1f ms), ended at trigger%+.1f ms",
			i+1, ms(rec.Start-w.sent), ms(w.ready-w.sent), ms(w.done-w.sent), ms(rec.End-w.sent))
	}
	for i := len(r.windows) - 1; i >= 0; i-- {
		if w := r.windows[i]; rec.Start > w.done {
			return fmt.Sprintf("%.1f ms after reload %d was done", ms(rec.Start-w.done), i+1)
		}
	}
	if rec.Start < r.steadyStart {
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
