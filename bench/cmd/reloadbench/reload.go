package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
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
	o   options
	sig syscall.Signal
	log *os.File // the server's log, with -log
}

func newTrigger(o options) (*trigger, error) {
	t := &trigger{o: o}
	if o.cmd == "" {
		t.sig, _ = parseSignal(o.sig)
	}
	if o.logPath != "" {
		f, err := os.Open(o.logPath)
		if err != nil {
			return nil, err
		}
		t.log = f
	}
	if _, err := children(o.pid); err != nil {
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

// poll is how often a reload in progress is looked at.
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
	old, err := children(t.o.pid)
	if err != nil {
		w.sentAt = time.Now()
		w.err = err
		return w
	}
	w.old = slices.Sorted(maps.Keys(old))
	var pending []byte // the log's last, unfinished line
	if t.log != nil {
		if _, err := t.log.Seek(0, io.SeekEnd); err != nil {
			w.sentAt = time.Now()
			w.err = err
			return w
		}
	}

	w.sentAt = time.Now()
	cmdDone := make(chan error, 1)
	if t.o.cmd != "" {
		args := strings.Fields(t.o.cmd)
		cmd := exec.CommandContext(ctx, args[0], args[1:]...)
		go func() {
			out, err := cmd.CombinedOutput()
			if err != nil {
				err = fmt.Errorf("%s: %w: %s", t.o.cmd, err, bytes.TrimSpace(out))
			}
			cmdDone <- err
		}()
	} else {
		if err := syscall.Kill(t.o.pid, t.sig); err != nil {
			w.err = fmt.Errorf("kill -%s %d: %w", t.o.sig, t.o.pid, err)
			return w
		}
		cmdDone <- nil
	}

	// Ready: the log line, or the command's exit and the new children.
	cmdExited := false
	for w.readyAt.IsZero() {
		select {
		case err := <-cmdDone:
			if err != nil {
				w.err = err
				return w
			}
			cmdExited = true
		default:
		}
		if t.log != nil {
			line, failed, err := t.scan(&pending)
			switch {
			case err != nil:
				w.err = err
				return w
			case failed != "":
				w.err = fmt.Errorf("the server says: %s", failed)
				return w
			case line != "":
				w.readyAt = time.Now()
				w.note = line
			}
		} else if cmdExited {
			now, err := children(t.o.pid)
			if err != nil {
				w.err = err
				return w
			}
			if fresh := newPids(now, old); len(fresh) >= t.o.workers {
				w.readyAt = time.Now()
				w.fresh = fresh
			}
		}
		if w.readyAt.IsZero() && !sleep(ctx, poll) {
			w.err = fmt.Errorf("not ready within %v", limit)
			return w
		}
	}

	// Done: every old child has exited.
	for {
		alive := 0
		for pid := range old {
			if isChild(pid, t.o.pid) {
				alive++
			}
		}
		if alive == 0 {
			w.doneAt = time.Now()
			break
		}
		if !sleep(ctx, poll) {
			w.err = fmt.Errorf("%d old workers still running %v after the reload was triggered", alive, limit)
			return w
		}
	}
	if w.fresh == nil {
		if now, err := children(t.o.pid); err == nil {
			w.fresh = newPids(now, old)
		}
	}
	return w
}

// scan reads what the log gained and returns the first line with the ready
// text or with the failure text.
func (t *trigger) scan(pending *[]byte) (ready, failed string, err error) {
	var buf [16 << 10]byte
	for range 64 { // at most 1 MiB per look
		n, err := t.log.Read(buf[:])
		*pending = append(*pending, buf[:n]...)
		if err == io.EOF || n == 0 {
			break
		}
		if err != nil {
			return "", "", err
		}
	}
	for {
		i := bytes.IndexByte(*pending, '\n')
		if i < 0 {
			return "", "", nil
		}
		line := string((*pending)[:i])
		*pending = (*pending)[i+1:]
		switch {
		case t.o.fail != "" && strings.Contains(line, t.o.fail):
			return "", line, nil
		case strings.Contains(line, t.o.ready):
			return line, "", nil
		}
	}
}

// children returns the live (not zombie) child processes of pid. It reads
// /proc/<pid>/task/*/children, which lists each thread's children, and
// falls back on a scan of /proc where the kernel does not provide it.
func children(pid int) (map[int]bool, error) {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return nil, err
	}
	kids := map[int]bool{}
	for _, task := range tasks {
		b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "task", task.Name(), "children"))
		if errors.Is(err, fs.ErrNotExist) {
			if _, serr := os.Stat(filepath.Join("/proc", strconv.Itoa(pid), "task", task.Name())); serr == nil {
				return scanChildren(pid) // the thread is there, the file is not
			}
			continue // the thread has just exited
		}
		if err != nil {
			return nil, err
		}
		for _, f := range strings.Fields(string(b)) {
			if k, err := strconv.Atoi(f); err == nil && isChild(k, pid) {
				kids[k] = true
			}
		}
	}
	return kids, nil
}

func scanChildren(pid int) (map[int]bool, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	kids := map[int]bool{}
	for _, e := range ents {
		if k, err := strconv.Atoi(e.Name()); err == nil && isChild(k, pid) {
			kids[k] = true
		}
	}
	return kids, nil
}

// isChild says whether pid is a live, not zombie, child of parent.
func isChild(pid, parent int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return false
	}
	f := strings.Fields(string(b[i+1:])) // state ppid ...
	if len(f) < 2 || f[0] == "Z" || f[0] == "X" {
		return false
	}
	ppid, err := strconv.Atoi(f[1])
	return err == nil && ppid == parent
}

func newPids(now, old map[int]bool) []int {
	var fresh []int
	for pid := range now {
		if !old[pid] {
			fresh = append(fresh, pid)
		}
	}
	slices.Sort(fresh)
	return fresh
}
