package main

import (
	"bufio"
	"io"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// logLine is one slog text line of the parent (or of a worker: they share
// its stderr), stamped when we read it.
type logLine struct {
	at   time.Time
	text string
	msg  string
	kv   map[string]string
}

func (l logLine) int(key string) int {
	n, err := strconv.Atoi(l.kv[key])
	if err != nil {
		return -1
	}
	return n
}

// parseSlog splits `time=… level=INFO msg="cluster ready" workers=2` into
// keys and values (quoted values unquoted).
func parseSlog(s string) map[string]string {
	kv := map[string]string{}
	for s = strings.TrimSpace(s); s != ""; s = strings.TrimLeft(s, " ") {
		eq := strings.IndexByte(s, '=')
		if eq <= 0 {
			break
		}
		key, rest := s[:eq], s[eq+1:]
		val, n := rest, len(rest)
		if strings.HasPrefix(rest, `"`) {
			n = quotedLen(rest)
			if u, err := strconv.Unquote(rest[:n]); err == nil {
				val = u
			} else {
				val = rest[:n]
			}
		} else if sp := strings.IndexByte(rest, ' '); sp >= 0 {
			val, n = rest[:sp], sp
		}
		kv[key] = val
		s = rest[n:]
	}
	return kv
}

// quotedLen is the length of the Go-quoted string s begins with.
func quotedLen(s string) int {
	for i := 1; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return len(s)
}

// wstate is what the log says about one worker process.
type wstate struct {
	pid, slot, gen  int
	ready, draining bool
}

// exitMsgs are the parent's messages that say a worker process is gone.
var exitMsgs = map[string]bool{
	"exit": true, "worker died, replacing it": true,
	"worker stopped on a signal, replacing it": true, "worker failed at start": true,
	"new worker failed during reload": true, "replacement worker failed, the old one keeps serving": true,
}

// tracker follows one parent's log: the generation, the wanted worker
// count, the live workers, and after every line whether the cluster is
// settled (ready, no reload running, every wanted slot served by a ready
// worker of the current generation).
type tracker struct {
	mu        sync.Mutex
	lines     []logLine
	settled   []bool // settled[i]: the state after lines[i]
	gen       int
	wanted    int
	ready     bool
	readyAt   time.Time
	reloading bool
	workers   map[int]*wstate
	eof       bool
	notify    chan struct{} // closed and replaced on every line
}

func newTracker() *tracker {
	return &tracker{workers: map[int]*wstate{}, notify: make(chan struct{})}
}

// read consumes r (the parent's stderr) until EOF, which comes once the
// parent and every worker have closed it.
func (t *tracker) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		kv := parseSlog(sc.Text())
		t.add(logLine{at: time.Now(), text: sc.Text(), msg: kv["msg"], kv: kv})
	}
	t.mu.Lock()
	t.eof = true
	close(t.notify)
	t.notify = make(chan struct{})
	t.mu.Unlock()
}

func (t *tracker) add(l logLine) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.apply(l)
	t.lines = append(t.lines, l)
	t.settled = append(t.settled, t.isSettled())
	close(t.notify)
	t.notify = make(chan struct{})
}

// apply updates the state from one line.
func (t *tracker) apply(l logLine) {
	pid := l.int("pid")
	switch {
	case l.msg == "listening" && pid < 0:
		t.wanted = l.int("workers")
	case l.msg == "fork":
		t.workers[pid] = &wstate{pid: pid, slot: l.int("worker"), gen: l.int("gen")}
	case l.msg == "listening":
		w := t.workers[pid]
		if w == nil {
			w = &wstate{pid: pid, slot: l.int("worker"), gen: l.int("gen")}
			t.workers[pid] = w
		}
		w.ready = true
	case l.msg == "cluster ready":
		t.ready, t.readyAt, t.gen = true, l.at, l.int("gen")
	case l.msg == "reloading":
		t.reloading = true
	case l.msg == "reloaded":
		t.reloading, t.gen = false, l.int("gen")
		t.drainWhere(func(w *wstate) bool { return w.gen < t.gen })
	case strings.HasPrefix(l.msg, "reload failed"):
		t.reloading = false
		t.drainWhere(func(w *wstate) bool { return w.gen == l.int("gen") })
	case l.msg == "scaling up":
		t.wanted = l.int("workers")
	case l.msg == "scaling down":
		t.wanted = l.int("workers")
		t.drainWhere(func(w *wstate) bool { return w.slot == l.int("worker") })
	case l.msg == "worker missed its heartbeat, replacing it":
		t.drainWhere(func(w *wstate) bool { return w.pid == pid })
	case exitMsgs[l.msg] && pid > 0:
		delete(t.workers, pid)
	}
}

func (t *tracker) drainWhere(f func(*wstate) bool) {
	for _, w := range t.workers {
		if f(w) {
			w.draining = true
		}
	}
}

// serving lists, by slot, the pid of the ready current-generation worker
// of each wanted slot that has one.
func (t *tracker) serving() map[int]int {
	s := map[int]int{}
	for _, w := range t.workers {
		if w.ready && !w.draining && w.gen == t.gen && w.slot >= 1 && w.slot <= t.wanted {
			s[w.slot] = w.pid
		}
	}
	return s
}

func (t *tracker) isSettled() bool {
	return t.ready && !t.reloading && t.wanted > 0 && len(t.serving()) == t.wanted
}

// servingSlots returns, by slot, the pid serving it.
func (t *tracker) servingSlots() map[int]int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.serving()
}

func (t *tracker) wantedCount() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.wanted
}

func (t *tracker) isReloading() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.reloading
}

// quiet reports whether the cluster is settled at want workers and no
// other worker process is left in the log's account (the drained ones
// have exited).
func (t *tracker) quiet(want int) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.isSettled() && t.wanted == want && len(t.workers) == want
}

func (t *tracker) line(i int) logLine {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.lines[i]
}

// find returns the index of the first line at or after from that
// matches, or -1.
func (t *tracker) find(from time.Time, match func(logLine) bool) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	for i, l := range t.lines {
		if !l.at.Before(from) && match(l) {
			return i
		}
	}
	return -1
}

// waitLine waits for a line at or after from that matches, up to the
// watchdog; it returns the line's index or -1.
func (t *tracker) waitLine(from time.Time, watchdog time.Duration, match func(logLine) bool) int {
	timer := time.NewTimer(watchdog)
	defer timer.Stop()
	for i := 0; ; {
		t.mu.Lock()
		for ; i < len(t.lines); i++ {
			if !t.lines[i].at.Before(from) && match(t.lines[i]) {
				t.mu.Unlock()
				return i
			}
		}
		ch, eof := t.notify, t.eof
		t.mu.Unlock()
		if eof {
			return -1
		}
		select {
		case <-ch:
		case <-timer.C:
			return -1
		}
	}
}

// waitState waits until cond holds, checking on every log line and every
// poll tick (for conditions on /proc), up to the watchdog.
func (t *tracker) waitState(watchdog, poll time.Duration, cond func() bool) bool {
	timer := time.NewTimer(watchdog)
	defer timer.Stop()
	tick := time.NewTicker(poll)
	defer tick.Stop()
	for {
		t.mu.Lock()
		ch := t.notify
		t.mu.Unlock()
		if cond() {
			return true
		}
		select {
		case <-ch:
		case <-tick.C:
		case <-timer.C:
			return cond()
		}
	}
}

// settledFrom returns when the cluster was first settled at or after line
// i (no earlier than notBefore), or false if it never was.
func (t *tracker) settledFrom(i int, notBefore time.Time) (time.Time, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for i = max(i, 0); i < len(t.lines); i++ {
		// A settled moment that the next line ends by starting a queued
		// reload does not count.
		if t.settled[i] && (i+1 == len(t.lines) || t.lines[i+1].msg != "reloading") {
			return later(t.lines[i].at, notBefore), true
		}
	}
	return time.Time{}, false
}

// indexAt is the index of the last line read at or before at (-1: none).
func (t *tracker) indexAt(at time.Time) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return sort.Search(len(t.lines), func(i int) bool { return t.lines[i].at.After(at) }) - 1
}

// excerpt returns the lines read within d of at.
func (t *tracker) excerpt(at time.Time, d time.Duration) []logLine {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []logLine
	for _, l := range t.lines {
		if l.at.After(at.Add(-d)) && l.at.Before(at.Add(d)) {
			out = append(out, l)
		}
	}
	return out
}

func (t *tracker) allLines() []logLine {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]logLine(nil), t.lines...)
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
