//go:build unix

package supervisor

import (
	"bufio"
	"cmp"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Command makes every worker a program that knows nothing of forkline
// (forkline run): it gets its slot's sockets from descriptor 3 on, as
// systemd's socket activation passes them, and says it is ready the way it
// would say it to systemd, on a notify socket of its own; or it is ready a
// fixed time after it started.
type Command struct {
	Argv       []string      // the program and its arguments; Argv[0] is looked up in PATH at every start
	ReadyAfter time.Duration // 0: ready at its READY=1
	// Output receives each line the program writes on stdout or stderr;
	// nil writes it to the parent's own, prefixed "[w<id> <pid>] ".
	Output func(id, pid, gen int, stderr bool, line string)
}

// envExec marks the start of a command's worker: the parent executes its
// own binary with it, which (in execCommand, from this package's init) sets
// LISTEN_PID to its own pid, as only the process itself can after fork,
// and executes the command in the same process.
const envExec = "FORKLINE_EXEC"

func init() {
	if os.Getenv(envExec) == "1" {
		execCommand()
	}
}

// execCommand becomes the command in os.Args[1:]; it returns only to exit.
func execCommand() {
	os.Unsetenv(envExec)
	os.Setenv("LISTEN_PID", strconv.Itoa(os.Getpid()))
	closeOnExecAbove(3 + atoiOr(os.Getenv("LISTEN_FDS"), 0))
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "forkline: no command to run")
		os.Exit(127)
	}
	path, err := exec.LookPath(os.Args[1])
	if err == nil {
		err = syscall.Exec(path, os.Args[1:], os.Environ())
	}
	fmt.Fprintf(os.Stderr, "forkline: cannot run %s: %v\n", os.Args[1], err)
	os.Exit(127)
}

// closeOnExecAbove marks every descriptor from first on close-on-exec, so
// that the program gets its sockets and nothing else: a descriptor the
// parent itself inherited without close-on-exec (from a shell, a CI runner)
// would otherwise reach every worker. Where /dev/fd cannot be listed it
// does nothing.
func closeOnExecAbove(first int) {
	entries, err := os.ReadDir("/dev/fd")
	if err != nil {
		return
	}
	for _, e := range entries {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd >= first {
			syscall.CloseOnExec(fd)
		}
	}
}

func atoiOr(s string, def int) int {
	if n, err := strconv.Atoi(s); err == nil {
		return n
	}
	return def
}

// commandStarter starts a Command's workers.
type commandStarter struct {
	cmd   Command
	log   *slog.Logger
	exe   string
	env   []string
	dir   string              // the workers' notify sockets
	cred  *syscall.Credential // the workers' user; nil: this process's
	spawn *spawner
	reap  *reaper
}

func newCommandStarter(log *slog.Logger, c Command, _ int, addrs []Address, user, group string) (*commandStarter, error) {
	if len(c.Argv) == 0 {
		return nil, errors.New("prefork: no command to run")
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("prefork: cannot find the executable to start workers: %w", err)
	}
	cred, err := workerCredential(user, group)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "forkline-notify-")
	if err != nil {
		return nil, fmt.Errorf("prefork: a directory for the workers' notify sockets: %w", err)
	}
	if cred != nil { // workers of another user reach their socket (chowned below) by its name only
		if err := os.Chmod(dir, 0o711); err != nil {
			os.Remove(dir)
			return nil, err
		}
	}
	env := workerEnv(os.Environ(), 0) // no GOMAXPROCS: the program is not ours to tune
	env = append(env, envExec+"=1", "LISTEN_FDS="+strconv.Itoa(len(addrs)), "EINHORN_FD_COUNT="+strconv.Itoa(len(addrs)))
	var names []string
	for i, a := range addrs {
		names = append(names, cmp.Or(a.Name, "main"))
		env = append(env, "EINHORN_FD_"+strconv.Itoa(i)+"="+strconv.Itoa(3+i))
	}
	env = append(env, "LISTEN_FDNAMES="+strings.Join(names, ":"))
	st := &commandStarter{cmd: c, log: log, exe: exe, env: env, dir: dir, cred: cred, spawn: startSpawner()}
	st.reap = startReaper(log, st.spawn)
	return st, nil
}

func (st *commandStarter) Close() {
	st.reap.stop()
	st.spawn.stop()
	os.RemoveAll(st.dir)
}

// Start starts one worker: the command with its slot's sockets at 3, 4...,
// and a notify socket of its own.
func (st *commandStarter) Start(spec Spec) (Started, error) {
	notifyPath := filepath.Join(st.dir, fmt.Sprintf("w%d-g%d-%s", spec.ID, spec.Gen, rand.Text()[:8]))
	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notifyPath, Net: "unixgram"})
	if err != nil {
		return Started{}, fmt.Errorf("prefork: a notify socket for worker %d: %w", spec.ID, err)
	}
	if st.cred != nil {
		if err := os.Chown(notifyPath, int(st.cred.Uid), int(st.cred.Gid)); err != nil {
			notify.Close()
			return Started{}, fmt.Errorf("prefork: a notify socket for worker %d: %w", spec.ID, err)
		}
	}
	var files []*os.File
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	for _, fd := range spec.FDs {
		nfd, err := syscall.Dup(fd)
		if err != nil {
			notify.Close()
			return Started{}, os.NewSyscallError("dup", err)
		}
		syscall.CloseOnExec(nfd)
		files = append(files, os.NewFile(uintptr(nfd), "forkline-slot-socket"))
	}
	stdout, stdoutW, err := os.Pipe()
	if err != nil {
		notify.Close()
		return Started{}, err
	}
	stderr, stderrW, err := os.Pipe()
	if err != nil {
		notify.Close()
		stdout.Close()
		stdoutW.Close()
		return Started{}, err
	}
	env := append(st.env[:len(st.env):len(st.env)],
		"NOTIFY_SOCKET="+notifyPath,
		"FORKLINE_WORKER_ID="+strconv.Itoa(spec.ID),
		"FORKLINE_GENERATION="+strconv.Itoa(spec.Gen))
	if _, port, err := net.SplitHostPort(spec.Welcome.Listeners[0].Addr); err == nil {
		env = append(env, "PORT="+port)
	}
	cmd := &exec.Cmd{
		Path:        st.exe,
		Args:        append([]string{st.exe}, st.cmd.Argv...),
		Stdout:      stdoutW,
		Stderr:      stderrW,
		Env:         env,
		ExtraFiles:  files,
		SysProcAttr: commandProcAttr(st.cred),
	}
	st.spawn.run(func() {
		if err = cmd.Start(); err == nil {
			st.reap.started(cmd.Process.Pid)
		}
	})
	stdoutW.Close()
	stderrW.Close()
	if err != nil {
		notify.Close()
		stdout.Close()
		stderr.Close()
		return Started{}, explainStart(err, st.cred)
	}
	p := &commandProcess{cmd: cmd, reap: st.reap, notify: notify, ch: newCommandChannel(spec),
		tail: &lastLines{max: 5}}
	p.ch.proc = p.Signal
	if spec.Welcome.Heartbeat {
		p.beat = &notifyBeat{pings: make(chan struct{}, 1), done: make(chan struct{})}
	}
	pid := cmd.Process.Pid
	out := st.cmd.Output
	if out == nil {
		out = prefixed
	}
	p.pipes.Add(2)
	go p.copyLines(stdout, func(l string) { out(spec.ID, pid, spec.Gen, false, l) })
	go p.copyLines(stderr, func(l string) { p.tail.add(l); out(spec.ID, pid, spec.Gen, true, l) })
	p.listen.Add(1)
	go p.readNotify(st.log.With("worker", spec.ID, "pid", pid, "gen", spec.Gen))
	p.ch.hello()
	if d := st.cmd.ReadyAfter; d > 0 {
		p.readyTimer = time.AfterFunc(d, p.ch.ready)
	}
	s := Started{Process: p, Channel: p.ch}
	if p.beat != nil {
		s.Beat = p.beat
	}
	return s, nil
}

// prefixed writes a worker's line to the parent's stdout or stderr.
func prefixed(id, pid, _ int, stderr bool, line string) {
	w := os.Stdout
	if stderr {
		w = os.Stderr
	}
	fmt.Fprintf(w, "[w%d %d] %s\n", id, pid, line)
}

// commandProcess is a command's worker.
type commandProcess struct {
	cmd        *exec.Cmd
	reap       *reaper
	notify     *net.UnixConn
	ch         *commandChannel
	beat       *notifyBeat
	tail       *lastLines
	readyTimer *time.Timer
	pipes      sync.WaitGroup // the output copiers
	listen     sync.WaitGroup // the notify reader
}

func (p *commandProcess) Pid() int { return p.cmd.Process.Pid }

func (p *commandProcess) Signal(sig os.Signal) error { return signalProcess(p.cmd.Process, sig) }

// Wait reaps the process, and ends what served it: the output copiers (a
// descendant that keeps the pipes open gets a second), the notify socket
// and the channel. A worker that exits before it was ready reports its
// last lines of stderr as its crash output.
func (p *commandProcess) Wait() Exit {
	err := p.cmd.Wait()
	p.reap.forget(p.Pid())
	if p.readyTimer != nil {
		p.readyTimer.Stop()
	}
	copied := make(chan struct{})
	go func() { p.pipes.Wait(); close(copied) }()
	select {
	case <-copied:
	case <-time.After(time.Second):
	}
	p.notify.Close()
	p.listen.Wait()
	os.Remove(p.notify.LocalAddr().String())
	p.ch.Close()
	ex := processExit(p.cmd.ProcessState, err)
	if !p.ch.wasReady() {
		ex.Crash = p.tail.String()
	}
	return ex
}

func (p *commandProcess) copyLines(r *os.File, line func(string)) {
	defer p.pipes.Done()
	defer r.Close()
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		s, err := br.ReadString('\n')
		if s != "" {
			line(strings.TrimSuffix(s, "\n"))
		}
		if err != nil {
			return
		}
	}
}

// readNotify reads what the worker tells its notify socket, as systemd
// would: READY=1 makes it ready, WATCHDOG=1 answers the heartbeat,
// STOPPING=1 is logged. Anything may send there: only its own tree knows
// the path.
func (p *commandProcess) readNotify(log *slog.Logger) {
	defer p.listen.Done()
	buf := make([]byte, 4096)
	stopping := false
	for {
		n, err := p.notify.Read(buf)
		if err != nil {
			return
		}
		for _, l := range strings.FieldsFunc(string(buf[:n]), func(r rune) bool { return r == '\n' }) {
			switch {
			case l == "READY=1":
				p.ch.ready()
			case l == "WATCHDOG=1":
				if p.beat != nil {
					p.beat.pong()
				}
			case l == "STOPPING=1" && !stopping:
				stopping = true
				log.Info("worker says it is stopping")
			case strings.HasPrefix(l, "STATUS="):
				log.Debug("worker status", "status", strings.TrimPrefix(l, "STATUS="))
			}
		}
	}
}
