package main

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// parent is one hello parent process we started, and its log.
type parent struct {
	cmd     *exec.Cmd
	pid     int
	tr      *tracker
	done    chan struct{} // closed once the process is reaped
	waitErr error
}

// startParent runs bin as a cluster on addr, in a process group of its
// own, with its stderr (shared by its workers) read by a tracker. If we
// die, the kernel kills it (Pdeathsig), and its workers die with it.
func startParent(cfg config, bin, addr string) (*parent, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	args := []string{"-addr", addr, "-workers", strconv.Itoa(cfg.workers), "-v"}
	if cfg.heartbeat > 0 {
		args = append(args, "-heartbeat-timeout", cfg.heartbeat.String())
	}
	cmd := exec.Command(bin, args...)
	cmd.Stderr = w
	cmd.Env = cleanEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	err = cmd.Start()
	w.Close()
	if err != nil {
		r.Close()
		return nil, err
	}
	p := &parent{cmd: cmd, pid: cmd.Process.Pid, tr: newTracker(), done: make(chan struct{})}
	go func() {
		p.tr.read(r)
		r.Close()
	}()
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// cleanEnv is our environment without forkline's own variables (a parent
// started from inside a worker would refuse to run) and without PORT.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "FORKLINE_") || strings.HasPrefix(kv, "PORT=") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// waitReady waits for the parent's "cluster ready" line.
func (p *parent) waitReady(watchdog time.Duration) error {
	if p.tr.waitLine(time.Time{}, watchdog, func(l logLine) bool { return l.msg == "cluster ready" }) < 0 {
		return fmt.Errorf("parent %d: no \"cluster ready\" within %v", p.pid, watchdog)
	}
	return nil
}

// understood checks that the log names the serving workers: everything
// the soak does to workers, and every window, depends on it.
func (p *parent) understood(workers int) error {
	ok := p.tr.waitState(5*time.Second, 50*time.Millisecond, func() bool { return p.tr.quiet(workers) })
	if !ok {
		return fmt.Errorf("parent %d is ready but its log does not show %d serving workers (msg=fork and msg=listening with worker=, pid=, gen= at -v): has the log changed? serving: %v",
			p.pid, workers, p.tr.servingSlots())
	}
	return nil
}

func (p *parent) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// waitExit waits for the parent to be reaped, up to the watchdog.
func (p *parent) waitExit(watchdog time.Duration) bool {
	select {
	case <-p.done:
		return true
	case <-time.After(watchdog):
		return false
	}
}

func (p *parent) signal(sig syscall.Signal) error {
	if p.exited() {
		return fmt.Errorf("parent %d already exited", p.pid)
	}
	return p.cmd.Process.Signal(sig)
}

// children opens a pidfd on every process running bin whose parent is p.
func (p *parent) children(bin string) []*pidfd {
	var out []*pidfd
	for _, pid := range procsRunning(bin) {
		if c, err := openChild(pid, p.pid); err == nil {
			out = append(out, c)
		}
	}
	return out
}

// kill ends p and everything it started, whatever state they are in: the
// workers (in groups of their own) by pidfd, then p's own process group.
func (p *parent) kill(bin string) {
	if p == nil || p.exited() {
		return
	}
	kids := p.children(bin)
	syscall.Kill(-p.pid, syscall.SIGKILL)
	for _, c := range kids {
		c.signal(syscall.SIGKILL)
		c.close()
	}
	p.waitExit(5 * time.Second)
}

// sweep kills, by pidfd, any process still running bin (only ever ours:
// bin is in a temporary directory we made) and waits for them to go.
func sweep(bin string) int {
	var left []*pidfd
	for _, pid := range procsRunning(bin) {
		if fd, err := pidfdOpenExe(pid, bin); err == nil {
			fd.signal(syscall.SIGKILL)
			left = append(left, fd)
		}
	}
	waitGone(left, 5*time.Second)
	for _, fd := range left {
		fd.close()
	}
	return len(left)
}
