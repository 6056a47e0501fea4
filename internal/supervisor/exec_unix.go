//go:build unix

package supervisor

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"syscall"
	"time"

	"github.com/forkline/forkline/internal/wire"
)

// execStarter starts workers by executing this program again, with the
// worker's identity in its environment, its channel as descriptor 3 and a
// pipe for its crash output as descriptor 4; the Welcome frame, written
// before the process starts, brings its sockets (wire/bootstrap.go).
//
// Workers run in process groups of their own. A signal sent to the
// parent's group (a ^C at a terminal, kill -HUP -PGID, SIGTTIN from a
// job-control shell) would otherwise also reach workers, and one that
// arrives while a worker starts, before its runtime has set up its
// handlers, takes the default action: SIGHUP and SIGINT end it, SIGTTIN
// stops it. The parent alone decides what a signal means for the cluster.
type execStarter struct {
	exe   string
	args  []string
	env   []string
	cred  *syscall.Credential // the workers' user; nil: this process's
	spawn *spawner
	reap  *reaper // nil unless this process is PID 1
}

func newExecStarter(log *slog.Logger, procs int, extraEnv []string, user, group string) (*execStarter, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("prefork: cannot find the executable to start workers: %w", err)
	}
	cred, err := workerCredential(user, group)
	if err != nil {
		return nil, err
	}
	st := &execStarter{exe: exe, args: os.Args, env: append(workerEnv(os.Environ(), procs), extraEnv...), cred: cred, spawn: startSpawner()}
	st.reap = startReaper(log, st.spawn)
	return st, nil
}

func (st *execStarter) Close() {
	st.reap.stop()
	st.spawn.stop()
}

// Start starts one worker.
func (st *execStarter) Start(spec Spec) (Started, error) {
	parentEnd, childEnd, err := wire.Pair()
	if err != nil {
		return Started{}, err
	}
	defer childEnd.Close()
	conn, err := wire.NewConn(parentEnd, wire.Options{MaxPayload: spec.Welcome.MaxPayload})
	if err != nil {
		return Started{}, err
	}
	var beat *dgramBeat
	fds := spec.FDs
	if spec.Welcome.Heartbeat {
		var child int
		if beat, child, err = newBeat(); err != nil {
			conn.Close()
			return Started{}, err
		}
		defer closeFD(child) // the frame below holds its own duplicate
		fds = append(fds[:len(fds):len(fds)], child)
	}
	started, err := st.startProcess(spec, conn, fds, childEnd)
	if err != nil {
		conn.Close()
		if beat != nil {
			beat.Close()
		}
		return Started{}, err
	}
	s := Started{Process: started, Channel: connChannel{conn}}
	if beat != nil {
		s.Beat = beat
	}
	return s, nil
}

func (st *execStarter) startProcess(spec Spec, conn *wire.Conn, fds []int, childEnd *os.File) (*execProcess, error) {
	welcome := &wire.Frame{Type: wire.TypeWelcome, To: uint32(spec.ID), Payload: spec.Welcome.Encode(), FDs: fds}
	if err := conn.SendControl(welcome); err != nil {
		return nil, err
	}
	crashR, crashW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer crashW.Close()
	cmd := &exec.Cmd{
		Path:        st.exe,
		Args:        st.args,
		Stdout:      os.Stdout,
		Stderr:      os.Stderr,
		Env:         append(st.env[:len(st.env):len(st.env)], identity(spec.ID, spec.Gen)...),
		ExtraFiles:  []*os.File{childEnd, crashW}, // wire.FDChannel, wire.FDCrash
		SysProcAttr: sysProcAttr(st.cred),
	}
	st.spawn.run(func() {
		if err = cmd.Start(); err == nil {
			st.reap.started(cmd.Process.Pid) // on the thread the reaper scans on
		}
	})
	if err != nil {
		crashR.Close()
		return nil, explainStart(err, st.cred)
	}
	p := &execProcess{cmd: cmd, crash: make(chan string, 1), crashR: crashR, reap: st.reap}
	go p.readCrash() // Wait waits for it
	return p, nil
}

// execProcess is a forked worker.
type execProcess struct {
	cmd    *exec.Cmd
	crashR *os.File
	crash  chan string // the first line of the crash output, once it has ended
	reap   *reaper
}

func (p *execProcess) Pid() int { return p.cmd.Process.Pid }

func (p *execProcess) Signal(sig os.Signal) error { return signalProcess(p.cmd.Process, sig) }

// signalProcess sends sig to p; one already reaped is not an error.
func signalProcess(p *os.Process, sig os.Signal) error {
	err := p.Signal(sig)
	if errors.Is(err, os.ErrProcessDone) {
		return nil
	}
	return err
}

// processExit is how a reaped process ended, from its state and the error its
// Wait returned.
func processExit(ps *os.ProcessState, err error) Exit {
	ex := Exit{Code: -1, Status: "exit status 0"}
	switch {
	case err != nil:
		ex.Status = err.Error()
	case ps != nil:
		ex.Status = ps.String()
	}
	if ps != nil {
		ex.Code = ps.ExitCode()
		if st, ok := ps.Sys().(syscall.WaitStatus); ok && st.Signaled() {
			ex.Signal = st.Signal()
		}
		ex.CPU = ps.UserTime() + ps.SystemTime()
	}
	return ex
}

func (p *execProcess) Wait() Exit {
	err := p.cmd.Wait()
	p.reap.forget(p.Pid())
	// The crash output ends with the process; a descendant that kept the
	// pipe (it is close-on-exec in the worker) cannot hold this up.
	p.crashR.SetReadDeadline(time.Now().Add(time.Second))
	ex := processExit(p.cmd.ProcessState, err)
	ex.Crash = <-p.crash
	p.crashR.Close()
	return ex
}

// readCrash keeps the first line that matters of the worker's crash output
// (Go writes it there as well as to stderr: see worker's debug.SetCrashOutput).
func (p *execProcess) readCrash() {
	var head bytes.Buffer
	io.Copy(&head, io.LimitReader(p.crashR, 4<<10))
	io.Copy(io.Discard, p.crashR) // never block a crashing worker on a full pipe
	sc := bufio.NewScanner(&head)
	line := ""
	for sc.Scan() {
		if t := sc.Text(); t != "" {
			line = t
			break
		}
	}
	p.crash <- line
}

// spawner starts every worker from one goroutine locked to its OS thread.
// On Linux a child's parent-death signal fires when the thread that forked
// it exits, not the process (golang/go#27505); forking from a thread that
// lives as long as the supervisor keeps the signal for the parent's death.
type spawner struct {
	reqs chan func()
	done chan struct{}
}

func startSpawner() *spawner {
	sp := &spawner{reqs: make(chan func()), done: make(chan struct{})}
	go func() {
		defer close(sp.done)
		runtime.LockOSThread()
		// Unlock before returning: a goroutine that exits locked takes its
		// thread down with it, which would signal every child.
		defer runtime.UnlockOSThread()
		for f := range sp.reqs {
			f()
		}
	}()
	return sp
}

// run runs f on the spawner's thread.
func (sp *spawner) run(f func()) {
	done := make(chan struct{})
	sp.reqs <- func() { f(); close(done) }
	<-done
}

// stop ends the spawner; call it once, after the last child is reaped.
func (sp *spawner) stop() {
	close(sp.reqs)
	<-sp.done
}

// connChannel is a *wire.Conn as a Channel.
type connChannel struct{ *wire.Conn }

func (c connChannel) Send(f wire.Frame) error        { return c.Conn.Send(&f) }
func (c connChannel) SendDirect(f wire.Frame) error  { return c.Conn.SendDirect(&f) }
func (c connChannel) SendControl(f wire.Frame) error { return c.Conn.SendControl(&f) }
func (c connChannel) SendWait(ctx context.Context, f wire.Frame) error {
	return c.Conn.SendWait(ctx, &f)
}
