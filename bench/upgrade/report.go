package main

import (
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/forkline/forkline/bench/internal/load"
)

// results is what one run recorded.
type results struct {
	keepAlive                   bool
	clients                     int
	pid                         int
	kids                        []int // the parent's children before the first upgrade
	answered                    []int // the pids that answered the readiness probes
	steadyStart, steadyEnd, end int64 // ns since the load started
	windows                     []window
	last                        string // the build installed last
	final                       string // the end's exe check: "" or why it failed
	recs                        []load.Record
	stale                       int
}

func (r *results) failedUpgrades() int {
	n := 0
	for _, w := range r.windows {
		if w.err != nil {
			n++
		}
	}
	return n
}

// overlaps returns the index of the upgrade window that rec's interval
// overlaps, or -1.
func (r *results) overlaps(rec load.Record) int {
	for i, w := range r.windows {
		if rec.Start <= w.done && rec.End >= w.sent {
			return i
		}
	}
	return -1
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

// span is b-a in ms; NaN when either was not seen.
func span(a, b time.Time) float64 {
	if a.IsZero() || b.IsZero() {
		return math.NaN()
	}
	return float64(b.Sub(a)) / 1e6
}

// perWindow is what the requests overlapping one upgrade window saw.
type perWindow struct {
	reqs, failed int
	lat          latencies
}

// summary is a run's requests sorted into the figures.
type summary struct {
	steady, inWin, phase2        latencies
	perWin                       []perWindow
	kinds                        map[string]int
	failed, outsideFailed, conns int
	failedRecs                   []load.Record
	pids                         map[int32]int // answers by pid
	gens                         map[int32]int // answers by generation
}

func (r *results) summarize() *summary {
	s := &summary{perWin: make([]perWindow, len(r.windows)), kinds: map[string]int{}, pids: map[int32]int{}, gens: map[int32]int{}}
	for _, rec := range r.recs {
		if !rec.Reused {
			s.conns++
		}
		ok := rec.OK()
		if !ok {
			s.failed++
			s.kinds[load.KindName(rec.Kind)]++
			s.failedRecs = append(s.failedRecs, rec)
		} else {
			s.pids[rec.Pid]++
			s.gens[rec.Gen]++
		}
		lat := ms(rec.End - rec.Start)
		switch {
		case rec.Start >= r.steadyStart && rec.Start < r.steadyEnd && ok:
			s.steady = append(s.steady, lat)
		case rec.Start >= r.steadyEnd && ok:
			s.phase2 = append(s.phase2, lat)
		}
		wi := r.overlaps(rec)
		if wi < 0 {
			if !ok {
				s.outsideFailed++
			}
			continue
		}
		pw := &s.perWin[wi]
		pw.reqs++
		if !ok {
			pw.failed++
			continue
		}
		s.inWin = append(s.inWin, lat)
		pw.lat = append(pw.lat, lat)
	}
	return s
}

func (s *summary) kindList() []string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(s.kinds)) {
		out = append(out, fmt.Sprintf("%s=%d", k, s.kinds[k]))
	}
	return out
}

// timings are the upgrades' spans, in ms. The split is by the log's own
// stamps (when the parent did each step, to the millisecond), against the
// wall clock at which SIGUSR2 was sent; total is until the bench read the
// last line (the window).
type timings struct {
	total, stamped, signal, preflight, exec, first, image, imageFirst latencies
}

func (r *results) timings() timings {
	var t timings
	for _, w := range r.windows {
		if w.err != nil {
			continue
		}
		t.total = append(t.total, span(w.sentAt, w.doneAt))
		t.stamped = append(t.stamped, span(w.sentAt, w.logDone))
		t.signal = append(t.signal, span(w.sentAt, w.logBegin))
		t.preflight = append(t.preflight, span(w.logBegin, w.logExec))
		t.exec = append(t.exec, span(w.logExec, w.logDone))
		t.first = append(t.first, span(w.logExec, w.logFirst))
		t.image = append(t.image, span(w.logExec, w.imageAt))
		t.imageFirst = append(t.imageFirst, span(w.imageAt, w.logFirst))
	}
	return t
}

// p50max is "p50/max" of l.
func p50max(l latencies) string {
	return fmt.Sprintf("%.1f/%.1f", l.pct(.5), l.pct(1))
}

// checks are the identity checks' verdicts: "ok: ..." or "FAILED: ...".
func (r *results) checks(s *summary) (parent, workers, exe string) {
	n := len(r.windows)
	var badParent, badKids, badExe []string
	for _, w := range r.windows {
		if !w.checked {
			badParent = append(badParent, fmt.Sprintf("upgrade %d: not checked (%v)", w.n, w.err))
			continue
		}
		if !w.parentSame {
			badParent = append(badParent, fmt.Sprintf("upgrade %d: parent=%q in the %q line, or another start time", w.n, w.parentField, msgDone))
		}
		if !w.kidsSame {
			badKids = append(badKids, fmt.Sprintf("upgrade %d: children %v", w.n, w.kids))
		}
		if w.err == nil && !w.exeSame {
			badExe = append(badExe, fmt.Sprintf("upgrade %d: not the file installed, or mark %q (want %q)", w.n, w.exeMark, w.build))
		}
	}
	for _, pid := range slices.Sorted(maps.Keys(s.pids)) {
		if !slices.Contains(r.kids, int(pid)) {
			badKids = append(badKids, fmt.Sprintf("pid %d answered %d requests", pid, s.pids[pid]))
		}
	}
	if len(s.gens) > 1 {
		badKids = append(badKids, fmt.Sprintf("generations answered: %v", genCounts(s.gens)))
	}
	if len(r.kids) != len(r.answered) {
		badKids = append(badKids, fmt.Sprintf("before the upgrades: children %v, answering %v", r.kids, r.answered))
	}
	if r.final != "" {
		badExe = append(badExe, "at the end: "+strings.TrimPrefix(r.final, "FAILED: "))
	}
	verdict := func(bad []string, ok string) string {
		if len(bad) > 0 {
			return "FAILED: " + strings.Join(bad, "; ")
		}
		return "ok: " + ok
	}
	parent = verdict(badParent, fmt.Sprintf("pid %d, the same process (pid and start time) after each of %d upgrades; every %q line says parent=%d", r.pid, n, msgDone, r.pid))
	workers = verdict(badKids, fmt.Sprintf("%v, the parent's children (same pids, same start times) after each of %d upgrades; every answer from one of them, %s", r.kids, n, genCounts(s.gens)))
	exe = verdict(badExe, fmt.Sprintf("/proc/%d/exe was the file just installed (same inode, its build's mark) after each of %d upgrades; at the end build %s, the file at the deploy path", r.pid, n, r.last))
	return parent, workers, exe
}

func genCounts(m map[int32]int) string {
	var out []string
	for _, g := range slices.Sorted(maps.Keys(m)) {
		out = append(out, fmt.Sprintf("gen %d: %d answers", g, m[g]))
	}
	return strings.Join(out, ", ")
}

// report writes "key value" lines to out and a readable account to human.
func (r *results) report(out, human io.Writer, o options) {
	s := r.summarize()
	r.keyValues(out, s)
	r.human(human, s, o)
}

func (r *results) keyValues(out io.Writer, s *summary) {
	t := r.timings()
	perUpgrade := make([]string, len(r.windows))
	winReqs := 0
	for i := range r.windows {
		perUpgrade[i] = fmt.Sprint(s.perWin[i].failed)
		winReqs += s.perWin[i].reqs
	}
	kv := func(k string, v any) {
		if f, ok := v.(float64); ok {
			v = fmt.Sprintf("%.2f", f)
		}
		fmt.Fprintf(out, "%s %v\n", k, v)
	}
	parent, workers, exe := r.checks(s)
	kv("requests", len(r.recs))
	kv("failed", s.failed)
	kv("failed-of", fmt.Sprintf("%d of %d", s.failed, len(r.recs)))
	kv("failed-kinds", orDash(strings.Join(s.kindList(), ",")))
	kv("failed-per-upgrade", orDash(strings.Join(perUpgrade, ",")))
	kv("failed-outside-windows", s.outsideFailed)
	kv("upgrades-completed", fmt.Sprintf("%d of %d", len(r.windows)-r.failedUpgrades(), len(r.windows)))
	kv("upgrades", len(r.windows)-r.failedUpgrades())
	kv("upgrades-failed", r.failedUpgrades())
	kv("upgrade-ms", p50max(t.total))
	kv("signal-ms", p50max(t.signal))
	kv("preflight-ms", p50max(t.preflight))
	kv("exec-ms", p50max(t.exec))
	kv("exec-first-line-ms", p50max(t.first))
	kv("stamped-ms", p50max(t.stamped))
	kv("exec-to-image-ms", p50max(t.image))
	kv("image-to-first-line-ms", p50max(t.imageFirst))
	kv("steady-requests", len(s.steady))
	kv("steady-p50-ms", s.steady.pct(0.50))
	kv("steady-p99-ms", s.steady.pct(0.99))
	kv("window-requests", winReqs)
	kv("upgrade-p50-ms", s.inWin.pct(0.50))
	kv("upgrade-p99-ms", s.inWin.pct(0.99))
	kv("upgrade-max-ms", s.inWin.pct(1))
	kv("upgrade-p99-ratio", s.inWin.pct(0.99)/s.steady.pct(0.99))
	kv("phase2-requests", len(s.phase2))
	kv("phase2-p99-ms", s.phase2.pct(0.99))
	kv("check-parent-pid", parent)
	kv("check-worker-pids", workers)
	kv("check-exe", exe)
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
	fmt.Fprintf(w, "  parent pid %d; workers %v\n", r.pid, r.kids)
	fmt.Fprintf(w, "  steady  [%.1f s, %.1f s): %d ok requests, p50 %.2f ms, p99 %.2f ms, max %.2f ms\n",
		ms(r.steadyStart)/1e3, ms(r.steadyEnd)/1e3, len(s.steady), s.steady.pct(.5), s.steady.pct(.99), s.steady.pct(1))
	fmt.Fprintf(w, "  upgrade windows: %d ok requests, p50 %.2f ms, p99 %.2f ms, max %.2f ms\n",
		len(s.inWin), s.inWin.pct(.5), s.inWin.pct(.99), s.inWin.pct(1))
	fmt.Fprintf(w, "  phase 2 (all after steady): %d ok requests, p99 %.2f ms\n", len(s.phase2), s.phase2.pct(.99))
	t := r.timings()
	fmt.Fprintf(w, "  upgrade ms, p50/max: SIGUSR2 -> %q read %s; by the log's stamps: SIGUSR2 -> %q %s = signal %s + preflight %s + exec %s; exec -> the new image's first line %s = exec line -> /proc/<pid>/exe seen changed %s + -> first line %s\n",
		msgDone, p50max(t.total), msgDone, p50max(t.stamped), p50max(t.signal), p50max(t.preflight), p50max(t.exec), p50max(t.first), p50max(t.image), p50max(t.imageFirst))
	fmt.Fprintf(w, "  per upgrade, ms after SIGUSR2 by the log's stamps (when the bench read the line in brackets):\n")
	for i, win := range r.windows {
		pw := s.perWin[i]
		status := "ok"
		if win.err != nil {
			status = win.err.Error()
		}
		check := fmt.Sprintf("exe %s %v, parent same %v, children %v same %v", orDash(win.exeMark), win.exeSame, win.parentSame, win.kids, win.kidsSame)
		fmt.Fprintf(w, "  upgrade %2d -> %s at %6.3f s: begin %s, exec %s, new image [%+6.1f], first new line %s, upgraded %s; install %4.1f ms; %5d requests, %d failed, p99 %6.2f, max %6.2f; %s; %s\n",
			win.n, win.build, ms(win.sent)/1e3, at(win.sentAt, win.logBegin, win.beginAt), at(win.sentAt, win.logExec, win.execAt), span(win.sentAt, win.imageAt),
			at(win.sentAt, win.logFirst, win.firstAt), at(win.sentAt, win.logDone, win.doneAt), float64(win.install)/1e6,
			pw.reqs, pw.failed, pw.lat.pct(.99), pw.lat.pct(1), check, status)
		for _, n := range win.notes {
			fmt.Fprintf(w, "      log: %s\n", n)
		}
	}
	if s.failed > 0 {
		r.failures(w, s, o.detail)
	}
}

// at is "+stamp [+read]" ms after sent.
func at(sent, stamp, read time.Time) string {
	return fmt.Sprintf("%+4.0f [%+6.1f]", span(sent, stamp), span(sent, read))
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

// where places a request relative to the nearest upgrade.
func (r *results) where(rec load.Record) string {
	if i := r.overlaps(rec); i >= 0 {
		w := r.windows[i]
		return fmt.Sprintf("in upgrade %d: started at SIGUSR2%+.1f ms (exec at +%.0f ms by the log's stamp, %q read at +%.1f ms), ended at SIGUSR2%+.1f ms",
			i+1, ms(rec.Start-w.sent), span(w.sentAt, w.logExec), msgDone, span(w.sentAt, w.doneAt), ms(rec.End-w.sent))
	}
	for i := len(r.windows) - 1; i >= 0; i-- {
		if w := r.windows[i]; rec.Start > w.done {
			return fmt.Sprintf("%.1f ms after upgrade %d was done", ms(rec.Start-w.done), i+1)
		}
	}
	if rec.Start < r.steadyStart {
		return "warm-up"
	}
	return "steady phase"
}
