package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/forkline/forkline/bench/internal/harness"
)

// window is one reload, from trigger to the old generation's exit.
type window struct {
	sentAt, readyAt, doneAt time.Time
	sent, ready, done       int64 // ns since the load started
	old, fresh              []int // pids of the old and the new generation
	note                    string
	err                     error
}

// trigger reloads the server and follows the reload to its end.
type trigger struct {
	o       options
	log     *os.File // the server's log, with -log
	pending []byte   // the log's last, unfinished line
}

func newTrigger(o options) (*trigger, error) {
	t := &trigger{o: o}
	if o.logPath != "" {
		f, err := os.Open(o.logPath)
		if err != nil {
			return nil, err
		}
		t.log = f
	}
	if _, err := harness.Children(o.pid); err != nil {
		t.close()
		return nil, fmt.Errorf("cannot list the children of pid %d: %w", o.pid, err)
	}
	return t, nil
}

func (t *trigger) close() {
	if t.log != nil {
		t.log.Close()
	}
}

// poll is how often a reload in progress is looked at: the kernel does not
// tell when a log gains a line or when the parent's children change.
const poll = 2 * time.Millisecond

// reload runs one reload; the window's err says why it did not complete.
func (t *trigger) reload(ctx context.Context, limit time.Duration) (w window) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	defer func() {
		now := time.Now()
		if w.readyAt.IsZero() {
			w.readyAt = now
		}
		if w.doneAt.IsZero() {
			w.doneAt = now
		}
	}()
	old, err := t.before()
	w.sentAt = time.Now()
	if err != nil {
		w.err = err
		return w
	}
	w.old = old
	cmdDone, err := t.fire(ctx)
	if err == nil {
		err = t.waitReady(ctx, limit, &w, cmdDone)
	}
	if err == nil {
		err = t.waitDone(ctx, limit, &w)
	}
	w.err = err
	if err == nil && w.fresh == nil {
		if now, err := harness.Children(t.o.pid); err == nil {
			w.fresh = newPids(now, w.old)
		}
	}
	return w
}

// before lists the old generation and skips what the log holds so far.
func (t *trigger) before() ([]int, error) {
	old, err := harness.Children(t.o.pid)
	if err != nil {
		return nil, err
	}
	t.pending = t.pending[:0]
	if t.log != nil {
		if _, err := t.log.Seek(0, io.SeekEnd); err != nil {
			return nil, err
		}
	}
	return old, nil
}

// fire triggers the reload: runs -cmd (no shell), or sends -signal to
// -pid. The channel gets the command's outcome.
func (t *trigger) fire(ctx context.Context) (<-chan error, error) {
	done := make(chan error, 1)
	if t.o.cmd == "" {
		if err := syscall.Kill(t.o.pid, t.o.signal); err != nil {
			return nil, fmt.Errorf("kill -%v %d: %w", t.o.signal, t.o.pid, err)
		}
		done <- nil
		return done, nil
	}
	args := strings.Fields(t.o.cmd)
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	go func() {
		out, err := cmd.CombinedOutput()
		if err != nil {
			err = fmt.Errorf("%s: %w: %s", t.o.cmd, err, bytes.TrimSpace(out))
		}
		done <- err
	}()
	return done, nil
}

// waitReady waits for the log line, or for the command's exit and the new
// children.
func (t *trigger) waitReady(ctx context.Context, limit time.Duration, w *window, cmdDone <-chan error) error {
	cmdExited := false
	for {
		select {
		case err := <-cmdDone:
			if err != nil {
				return err
			}
			cmdExited = true
		default:
		}
		ready, err := t.isReady(w, cmdExited)
		if err != nil {
			return err
		}
		if ready {
			w.readyAt = time.Now()
			return nil
		}
		if !harness.Pause(ctx, poll) {
			return fmt.Errorf("not ready within %v", limit)
		}
	}
}

func (t *trigger) isReady(w *window, cmdExited bool) (bool, error) {
	if t.log != nil {
		line, failed, err := t.scan()
		switch {
		case err != nil:
			return false, err
		case failed != "":
			return false, fmt.Errorf("the server says: %s", failed)
		}
		w.note = line
		return line != "", nil
	}
	if !cmdExited {
		return false, nil
	}
	now, err := harness.Children(t.o.pid)
	if err != nil {
		return false, err
	}
	if fresh := newPids(now, w.old); len(fresh) >= t.o.workers {
		w.fresh = fresh
		return true, nil
	}
	return false, nil
}

// waitDone waits until every old child has exited.
func (t *trigger) waitDone(ctx context.Context, limit time.Duration, w *window) error {
	for {
		alive := 0
		for _, pid := range w.old {
			if harness.IsChild(pid, t.o.pid) {
				alive++
			}
		}
		if alive == 0 {
			w.doneAt = time.Now()
			return nil
		}
		if !harness.Pause(ctx, poll) {
			return fmt.Errorf("%d old workers still running %v after the reload was triggered", alive, limit)
		}
	}
}

// scan reads what the log gained and returns the first line with the ready
// text or with the failure text.
func (t *trigger) scan() (ready, failed string, err error) {
	var buf [16 << 10]byte
	for range 64 { // at most 1 MiB per look
		n, err := t.log.Read(buf[:])
		t.pending = append(t.pending, buf[:n]...)
		if err == io.EOF || n == 0 {
			break
		}
		if err != nil {
			return "", "", err
		}
	}
	for {
		i := bytes.IndexByte(t.pending, '\n')
		if i < 0 {
			return "", "", nil
		}
		line := string(t.pending[:i])
		t.pending = t.pending[i+1:]
		switch {
		case t.o.fail != "" && strings.Contains(line, t.o.fail):
			return "", line, nil
		case strings.Contains(line, t.o.ready):
			return line, "", nil
		}
	}
}

// newPids are the pids of now that are not in old.
func newPids(now, old []int) []int {
	var fresh []int
	for _, pid := range now {
		if !slices.Contains(old, pid) {
			fresh = append(fresh, pid)
		}
	}
	return fresh
}
