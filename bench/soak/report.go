package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// report attributes the failures, prints the report and the figures,
// writes bench/results/soak.md, and returns the exit status.
func (s *soak) report() int {
	s.settle()
	acc := s.attribute(s.load.snapshotFailures())
	var b strings.Builder
	s.writeHeader(&b)
	s.writeTotals(&b, acc)
	s.writeFaults(&b, acc)
	s.writeViolations(&b, acc)
	s.writeChecks(&b)
	fig, violations := s.figures(acc)
	// On stdout the figures come last, one per line; the file has them too.
	fmt.Print(b.String() + "\n" + fig)
	fmt.Fprintf(&b, "\n## Figures\n\n```\n%s```\n", fig)
	err := os.MkdirAll(filepath.Dir(s.cfg.out), 0o755)
	if err == nil {
		err = os.WriteFile(s.cfg.out, []byte(b.String()), 0o644)
	}
	if err != nil {
		s.progress("cannot write %s: %v", s.cfg.out, err)
	}
	s.writeLogs()
	if violations > 0 {
		return 1
	}
	return 0
}

func (s *soak) writeHeader(b *strings.Builder) {
	st := makeStamp(s.cfg.src)
	fmt.Fprintf(b, "# forkline chaos soak\n\n")
	fmt.Fprintf(b, "- commit %s, %s, %s, %d CPUs, %s\n", st.commit, st.date, st.kernel, st.cpus, st.goVersion)
	fmt.Fprintf(b, "- `go run ./soak -duration %v -seed %d` (examples/hello built from %s)\n", s.cfg.duration, s.cfg.seed, s.cfg.src)
	fmt.Fprintf(b, "- %s, %d workers to start, -heartbeat-timeout %v; %d clients with a new connection per request, %d keep-alive; request timeout %v\n",
		s.addr, s.cfg.workers, s.cfg.heartbeat, s.cfg.closers, s.cfg.keepAlive, s.cfg.timeout)
	if v, err := os.ReadFile("/proc/sys/net/ipv4/tcp_migrate_req"); err == nil {
		v := strings.TrimSpace(string(v))
		fmt.Fprintf(b, "- net.ipv4.tcp_migrate_req = %s", v)
		if v == "0" {
			b.WriteString(": Linux resets the connections still queued on a removed slot's socket when it closes, so a SIGTTOU under load can cause resets; they count as scaling violations")
		}
		b.WriteString("\n")
	}
}

func (s *soak) writeTotals(b *strings.Builder, acc *accounting) {
	sent, ok := s.load.sent.Load(), s.load.ok.Load()
	failed := sent - ok
	fmt.Fprintf(b, "\n## Requests\n\n")
	fmt.Fprintf(b, "- sent %d, ok %d, failed %d: refused %d, reset %d, timeout %d, other %d\n",
		sent, ok, failed, acc.byKind[kindRefused], acc.byKind[kindReset], acc.byKind[kindTimeout], acc.byKind[kindOther])
	fmt.Fprintf(b, "- of the failures: %d on connections a killed worker had accepted (allowed), %d during the parent restart (expected; gap %v); violations: %d\n",
		acc.allowed, acc.expected, s.restartGap().Round(time.Millisecond), len(acc.bad))
}

func (s *soak) writeFaults(b *strings.Builder, acc *accounting) {
	fmt.Fprintf(b, "\n## Faults (%d)\n\n", len(s.faults))
	b.WriteString("| # | t | fault | details | back to wanted count after | failures refused/reset/timeout/other | allowance: held / failed on them | violations |\n")
	b.WriteString("|--:|--:|---|---|--:|--:|--:|--:|\n")
	for _, f := range s.faults {
		t := acc.tally[f]
		back := "never"
		if f.skipped {
			back = "-"
		} else if f.ended {
			back = f.end.Sub(f.at).Round(time.Millisecond).String()
		}
		allow := "-"
		if f.kind == faultKill && !f.skipped {
			allow = fmt.Sprintf("%d / %d", t.held, t.matched)
		}
		fmt.Fprintf(b, "| %d | %s | %s | %s | %s | %d/%d/%d/%d | %s | %d |\n", f.n, s.rel(f.at), f.kind, f.detail, back,
			t.byKind[kindRefused], t.byKind[kindReset], t.byKind[kindTimeout], t.byKind[kindOther], allow, t.violations)
	}
}

// writeViolations lists the violating failures grouped by the fault
// blamed, with the parent's log around the first of each group.
func (s *soak) writeViolations(b *strings.Builder, acc *accounting) {
	if len(acc.bad) == 0 {
		b.WriteString("\n## Violations\n\nnone\n")
		return
	}
	fmt.Fprintf(b, "\n## Violations (%d)\n", len(acc.bad))
	var order []*fault
	groups := map[*fault][]verdict{}
	for _, v := range acc.bad {
		if _, seen := groups[v.fault]; !seen {
			order = append(order, v.fault)
		}
		groups[v.fault] = append(groups[v.fault], v)
	}
	for _, f := range order {
		vs := groups[f]
		title := "no fault"
		if f != nil {
			title = fmt.Sprintf("fault %d (%s at %s: %s)", f.n, f.kind, s.rel(f.at), f.detail)
		}
		fmt.Fprintf(b, "\n### %s: %d, %s\n\n", title, len(vs), vs[0].reason)
		for i, v := range vs {
			if i == 10 {
				fmt.Fprintf(b, "- … %d more\n", len(vs)-10)
				break
			}
			b.WriteString("- " + s.describe(v) + "\n")
		}
		s.writeExcerpt(b, f, vs[0].f.at)
	}
}

func (s *soak) describe(v verdict) string {
	f := v.f
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s %s (started %s", s.rel(f.at), f.client, f.kind, s.rel(f.start))
	if f.port != 0 {
		fmt.Fprintf(&b, ", client port %d, connected %s", f.port, s.rel(f.dialed))
	}
	if f.lastPID != 0 {
		fmt.Fprintf(&b, ", last answered by pid %d", f.lastPID)
	}
	fmt.Fprintf(&b, "): %s", f.err)
	if len(v.candidates) > 1 {
		var c []string
		for _, cf := range v.candidates {
			c = append(c, fmt.Sprintf("#%d %s", cf.n, cf.kind))
		}
		fmt.Fprintf(&b, "; windows open: %s", strings.Join(c, ", "))
	}
	return b.String()
}

// writeExcerpt prints the parent's log within 300 ms of at (at most 30
// lines), without slog's time= field (our own stamp replaces it).
func (s *soak) writeExcerpt(b *strings.Builder, f *fault, at time.Time) {
	var tr *tracker
	switch {
	case f != nil:
		tr = f.tr
	case s.p1 != nil:
		tr = s.p1.tr
	default:
		return
	}
	lines := tr.excerpt(at, 300*time.Millisecond)
	fmt.Fprintf(b, "\nparent log within 300 ms of %s:\n\n```\n", s.rel(at))
	for i, l := range lines {
		if i == 30 {
			fmt.Fprintf(b, "… %d more lines\n", len(lines)-30)
			break
		}
		fmt.Fprintf(b, "%s %s\n", s.rel(l.at), stripTime(l.text))
	}
	b.WriteString("```\n")
}

func stripTime(line string) string {
	if strings.HasPrefix(line, "time=") {
		if i := strings.IndexByte(line, ' '); i > 0 {
			return line[i+1:]
		}
	}
	return line
}

func (s *soak) writeChecks(b *strings.Builder) {
	fmt.Fprintf(b, "\n## Leaks and restart\n\n")
	fmt.Fprintf(b, "- first parent, after the first ready: %d fds (%s), %d threads, %d processes\n",
		s.before.fds, formatKinds(s.before.kinds), s.before.threads, s.before.procs)
	fmt.Fprintf(b, "- first parent, back at %d workers after the faults: %d fds (%s), %d threads, %d processes; at most %d workers at once\n",
		s.cfg.workers, s.after.fds, formatKinds(s.after.kinds), s.after.threads, s.after.procs, s.peak.Load())
	r := s.restart
	fmt.Fprintf(b, "- parent SIGKILL: workers gone after %v, new parent ready after %v, %d answers after it, exit on SIGTERM: %s, processes left %d\n",
		r.goneAfter.Round(time.Millisecond), r.readyAfter.Round(time.Millisecond), r.served, r.exit, r.left)
	b.WriteString("\n| check | result | |\n|---|---|---|\n")
	for _, c := range s.checks {
		res := "ok"
		if !c.ok {
			res = "**FAILED**"
		}
		fmt.Fprintf(b, "| %s | %s | %s |\n", c.name, res, c.detail)
	}
}

// figures returns the figures lines and the violation count: violating
// failures plus failed checks.
func (s *soak) figures(acc *accounting) (string, int) {
	n := len(acc.bad)
	for _, c := range s.checks {
		if !c.ok {
			n++
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "soak-requests %d\nsoak-ok %d\n", s.load.sent.Load(), s.load.ok.Load())
	for _, k := range kinds {
		fmt.Fprintf(&b, "soak-failed-%s %d\n", k, acc.byKind[k])
	}
	fmt.Fprintf(&b, "soak-violations %d\n", n)
	fmt.Fprintf(&b, "soak-fds %d %d\nsoak-threads %d %d\nsoak-procs %d %d\n",
		s.before.fds, s.after.fds, s.before.threads, s.after.threads, s.before.procs, s.after.procs)
	return b.String(), n
}

// writeLogs writes both parents' logs, with our stamps, to -log.
func (s *soak) writeLogs() {
	if s.cfg.keepLog == "" {
		return
	}
	var b strings.Builder
	for i, p := range []*parent{s.p1, s.p2} {
		if p == nil {
			continue
		}
		fmt.Fprintf(&b, "# parent %d (pid %d)\n", i+1, p.pid)
		for _, l := range p.tr.allLines() {
			fmt.Fprintf(&b, "%s %s\n", s.rel(l.at), l.text)
		}
	}
	if err := os.WriteFile(s.cfg.keepLog, []byte(b.String()), 0o644); err != nil {
		s.progress("cannot write %s: %v", s.cfg.keepLog, err)
	}
}
