package main

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/forkline/forkline/bench/internal/harness"
)

// The parent's log lines an upgrade is followed by (internal/supervisor,
// upgrade_linux.go).
const (
	msgBegin    = "upgrading the parent in place"
	msgExec     = "upgrade: executing the new parent"
	msgDone     = "upgraded in place"
	msgRefused  = "upgrade refused, this parent carries on"
	msgRollback = "upgrade rolled back: this is the previous parent again"
)

// window is one upgrade, from SIGUSR2 sent to the "upgraded in place" line.
type window struct {
	n     int    // 1, 2, ...
	build string // the build installed before it
	// When the bench sent the signal and read each line.
	sentAt, beginAt, execAt, firstAt, doneAt time.Time
	// When the bench saw /proc/<pid>/exe become the new file: the
	// execve's point of no return (looked at every ms after the exec line).
	imageAt time.Time
	// The same lines' own stamps (the log's resolution).
	logBegin, logExec, logFirst, logDone time.Time
	sent, done                           int64 // ns since the load started: the window
	install                              time.Duration
	parentField                          string // parent= of the "upgraded in place" line
	workersField                         string // workers= of it
	exeSame                              bool   // /proc/<pid>/exe is the file installed
	exeMark                              string // the mark at its end
	parentSame                           bool   // the same pid and start time
	kids                                 []int  // the parent's children after it
	kidsSame                             bool
	checked                              bool     // the checks ran (not when the parent exited)
	notes                                []string // warnings and errors the log gained meanwhile
	err                                  error
}

// upgrader installs builds and upgrades the parent.
type upgrader struct {
	o      options
	exe    string // /proc/<pid>/exe
	dep    deploy
	log    *follower
	exited <-chan struct{} // the parent's exit
	// The processes as they were before the first upgrade.
	pidStart  string
	kids      []int
	kidsStart map[int]string
}

func newUpgrader(o options, dep deploy, exited <-chan struct{}) (*upgrader, error) {
	u := &upgrader{o: o, exe: "/proc/" + strconv.Itoa(o.pid) + "/exe", dep: dep, exited: exited, kidsStart: map[int]string{}}
	var err error
	if u.pidStart, err = startTime(o.pid); err != nil {
		return nil, err
	}
	if u.kids, err = harness.Children(o.pid); err != nil {
		return nil, fmt.Errorf("cannot list the children of pid %d: %w", o.pid, err)
	}
	for _, k := range u.kids {
		if u.kidsStart[k], err = startTime(k); err != nil {
			return nil, err
		}
	}
	if u.log, err = follow(o.logPath); err != nil {
		return nil, err
	}
	return u, nil
}

func (u *upgrader) close() { u.log.close() }

// upgrade installs b and upgrades the parent to it; the window's err says
// why the upgrade did not complete.
func (u *upgrader) upgrade(ctx context.Context, n int, b build) (w window) {
	w = window{n: n, build: b.name}
	defer func() {
		if w.doneAt.IsZero() {
			w.doneAt = time.Now()
		}
	}()
	fi, took, err := u.dep.install(b)
	w.install = took
	if err == nil {
		err = u.log.skip()
	}
	if err != nil {
		w.sentAt, w.err = time.Now(), err
		return w
	}
	ctx, cancel := context.WithTimeout(ctx, u.o.limit)
	defer cancel()
	old, err := os.Stat(u.exe)
	if err != nil {
		w.sentAt, w.err = time.Now(), err
		return w
	}
	w.sentAt = time.Now()
	if err := syscall.Kill(u.o.pid, syscall.SIGUSR2); err != nil {
		w.err = fmt.Errorf("kill -USR2 %d: %w", u.o.pid, err)
		return w
	}
	w.err = u.follow(ctx, &w, old)
	select {
	case <-u.exited:
	default:
		u.check(&w, fi) // after a refusal or a rollback too: the same parent, the same workers
	}
	return w
}

// follow reads the log until the upgrade is done or has failed; between
// the exec line and the new image's first line it looks every ms for
// /proc/<pid>/exe to change from old.
func (u *upgrader) follow(ctx context.Context, w *window, old os.FileInfo) error {
	look := func() {
		if !w.execAt.IsZero() && w.imageAt.IsZero() {
			if fi, err := os.Stat(u.exe); err == nil && !os.SameFile(fi, old) {
				w.imageAt = time.Now()
			}
		}
	}
	for {
		look()
		lines, err := u.log.lines()
		if err != nil {
			return err
		}
		now := time.Now()
		for _, line := range lines {
			r, ok := parseRecord(line)
			if !ok {
				continue
			}
			if !w.execAt.IsZero() && w.firstAt.IsZero() && r.msg != msgExec {
				w.firstAt, w.logFirst = now, r.t // the new image's first line
			}
			if r.level == "WARN" || r.level == "ERROR" {
				w.notes = append(w.notes, line)
			}
			switch r.msg {
			case msgBegin:
				w.beginAt, w.logBegin = now, r.t
			case msgExec:
				w.execAt, w.logExec = now, r.t
			case msgDone:
				look()
				w.doneAt, w.logDone = now, r.t
				w.parentField, w.workersField = r.kv["parent"], r.kv["workers"]
				return nil
			case msgRefused:
				return fmt.Errorf("refused: %s", r.kv["err"])
			case msgRollback:
				w.parentField = r.kv["parent"]
				return fmt.Errorf("rolled back: %s", r.kv["err"])
			}
		}
		select {
		case <-u.exited:
			return fmt.Errorf("the parent (pid %d) exited", u.o.pid)
		default:
		}
		d := fallback
		if !w.execAt.IsZero() && w.imageAt.IsZero() {
			d = time.Millisecond
		}
		if !u.log.wait(ctx, d) {
			if ctx.Err() == context.DeadlineExceeded {
				return fmt.Errorf("no %q line within %v", msgDone, u.o.limit)
			}
			return ctx.Err()
		}
	}
}

// check looks at the processes after an upgrade: the parent the same
// process, running the file installed; its children the same workers.
func (u *upgrader) check(w *window, installed os.FileInfo) {
	w.checked = true
	st, err := startTime(u.o.pid)
	named := w.parentField == strconv.Itoa(u.o.pid) || (w.err != nil && w.parentField == "") // a refusal names none
	w.parentSame = err == nil && st == u.pidStart && named
	same, mark, err := exeCheck(u.o.pid, installed)
	w.exeSame, w.exeMark = same && mark == w.build, mark
	if err != nil {
		w.exeMark = err.Error()
	}
	kids, err := harness.Children(u.o.pid)
	w.kids = kids
	w.kidsSame = err == nil && slices.Equal(kids, u.kids)
	for _, k := range kids {
		if st, err := startTime(k); err != nil || st != u.kidsStart[k] {
			w.kidsSame = false
		}
	}
}
