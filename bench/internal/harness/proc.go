package harness

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// StopBound is how long a stopped server may take to exit after SIGTERM
// before it is sent SIGKILL (the scripts' 10 s).
const StopBound = 10 * time.Second

// Server is a process started in a session, and so a process group, of its
// own: it is stopped by signalling that group, which holds everything it
// started except what moved to groups of its own (forkline's workers: Stop
// looks after those by pid).
type Server struct {
	Name    string
	Pid     int       // also the process group's id
	Started time.Time // just before exec
	Log     string    // the file that gets its stdout and stderr

	s      *Suite
	cmd    *exec.Cmd
	logf   *os.File
	exited chan struct{} // closed once the leader has been reaped
}

// Spec says how to start a server.
type Spec struct {
	Name string
	Argv []string
	Env  []string // added to this process's environment
	Log  string   // stdout and stderr, appended; default logs/<Name>.log
	// Stdout, if set, gets stdout (appended), and Log only stderr.
	Stdout string
	Dir    string
}

// Start starts spec in a new session. The server's leader is killed if
// this process dies first (Pdeathsig; its workers follow it or are told by
// their parent), and Main stops whatever is left.
func (s *Suite) Start(spec Spec) (*Server, error) {
	if spec.Log == "" {
		spec.Log = filepath.Join(s.Logs(), spec.Name+".log")
	}
	logf, err := os.OpenFile(spec.Log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(spec.Argv[0], spec.Argv[1:]...)
	cmd.Dir = spec.Dir
	cmd.Env = append(os.Environ(), spec.Env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	var outf *os.File
	if spec.Stdout != "" {
		if outf, err = os.OpenFile(spec.Stdout, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644); err != nil {
			logf.Close()
			return nil, err
		}
		defer outf.Close() // the child has its own copy once started
		cmd.Stdout = outf
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGKILL}
	sv := &Server{Name: spec.Name, Log: spec.Log, s: s, cmd: cmd, logf: logf, exited: make(chan struct{})}
	sv.Started = time.Now()
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("%s: %w", spec.Name, err)
	}
	sv.Pid = cmd.Process.Pid
	go func() {
		_ = cmd.Wait() // its status is the server's business; its log says why
		close(sv.exited)
	}()
	s.mu.Lock()
	s.servers[sv] = struct{}{}
	s.mu.Unlock()
	return sv, nil
}

// Exited is closed once the server's leader has exited.
func (sv *Server) Exited() <-chan struct{} { return sv.exited }

// ExitCode is the leader's exit status (-1 for a signal); only valid once
// Exited is closed.
func (sv *Server) ExitCode() int { return sv.cmd.ProcessState.ExitCode() }

// Stop sends SIGTERM to the server's process group and waits until the
// group is empty and every descendant the server had (those in groups of
// their own too) has exited; past bound it sends SIGKILL to the group and
// to those descendants, and says so in the error.
func (sv *Server) Stop(bound time.Duration) error {
	defer sv.forget()
	kids := Descendants(sv.Pid)
	_ = syscall.Kill(-sv.Pid, syscall.SIGTERM)
	gone := func() bool { return sv.gone(kids) }
	err := Poll(context.Background(), 10*time.Millisecond, bound, gone)
	if err == nil {
		return nil
	}
	_ = syscall.Kill(-sv.Pid, syscall.SIGKILL)
	for _, k := range kids {
		k.Kill(syscall.SIGKILL)
	}
	if Poll(context.Background(), 10*time.Millisecond, 5*time.Second, gone) != nil {
		return fmt.Errorf("%s (pid %d): still running after SIGKILL", sv.Name, sv.Pid)
	}
	return fmt.Errorf("%s (pid %d): still running %v after SIGTERM; killed", sv.Name, sv.Pid, bound)
}

func (sv *Server) gone(kids []Proc) bool {
	select {
	case <-sv.exited:
	default:
		return false
	}
	if GroupAlive(sv.Pid) {
		return false
	}
	for _, k := range kids {
		if k.Alive() {
			return false
		}
	}
	return true
}

func (sv *Server) forget() {
	sv.logf.Close()
	sv.s.mu.Lock()
	delete(sv.s.servers, sv)
	sv.s.mu.Unlock()
}

// StopAll stops every server still running, for the end of a suite.
func (s *Suite) StopAll() {
	s.mu.Lock()
	var left []*Server
	for sv := range s.servers {
		left = append(left, sv)
	}
	s.mu.Unlock()
	for _, sv := range left {
		if err := sv.Stop(StopBound); err != nil {
			Logf("%v", err)
		}
	}
}

// RunToEnd runs a measuring program to its end in a process group of its
// own, with its stdout and stderr in raw/<name>.out and .err, and returns
// them. Past timeout, or when the suite is interrupted, the group is
// stopped and the run fails.
func (s *Suite) RunToEnd(name string, argv []string, timeout time.Duration, env ...string) (stdout, stderr []byte, err error) {
	out, errf := filepath.Join(s.Raw(), name+".out"), filepath.Join(s.Raw(), name+".err")
	for _, f := range []string{out, errf} {
		if err := os.WriteFile(f, nil, 0o644); err != nil {
			return nil, nil, err
		}
	}
	sv, err := s.Start(Spec{Name: name, Argv: argv, Env: env, Log: errf, Stdout: out})
	if err != nil {
		return nil, nil, err
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-sv.exited:
		sv.forget()
		if c := sv.ExitCode(); c != 0 {
			err = fmt.Errorf("%s exited with status %d", name, c)
		}
	case <-timer.C:
		err = errors.Join(fmt.Errorf("%s: not done within %v", name, timeout), sv.Stop(StopBound))
	case <-s.Ctx.Done():
		err = errors.Join(s.Ctx.Err(), sv.Stop(StopBound))
	}
	stdout, _ = os.ReadFile(out)
	stderr, _ = os.ReadFile(errf)
	return stdout, stderr, err
}
