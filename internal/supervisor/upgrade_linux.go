package supervisor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/forkline/forkline/internal/wire"
)

// Upgrading the parent in place: it re-executes the executable on disk in
// the same process (same pid: the workers stay its children, and systemd's
// MAINPID holds), handing itself its state through a memfd: every slot
// socket, steering group, worker channel (detached at a frame boundary,
// with what was received and not decoded), heartbeat socket and crash
// pipe, the counters, and the descriptors the caller asks to carry (the
// control socket). The new binary first passes a preflight (it runs with
// envUpgradeCheck and must print the state version it reads); a new parent
// that cannot adopt the state re-executes the old executable, kept open,
// with the same state.

// upgradeVersion is the version of upgradeState this binary writes and
// reads.
const upgradeVersion = 1

const (
	envUpgradeCheck    = "FORKLINE_UPGRADE_CHECK"    // "1": print the state version, exit 0
	envUpgradeState    = "FORKLINE_UPGRADE_STATE"    // the state's descriptor
	envUpgradeExe      = "FORKLINE_UPGRADE_EXE"      // the old executable's descriptor, to roll back to
	envUpgradeRollback = "FORKLINE_UPGRADE_ROLLBACK" // why the new parent gave the state back
)

// upgradeCheckLine is what the preflight prints.
const upgradeCheckLine = "forkline-upgrade-state "

// preflightTimeout bounds the new binary's check run.
const preflightTimeout = 10 * time.Second

// earlySignals catches, from this package's init, the signals that arrive
// between an upgrade's exec and the moment the parent's own handler runs;
// TakeEarlySignals hands them over.
var earlySignals chan os.Signal

// upgradeSignals are the signals a parent handles.
var upgradeSignals = []os.Signal{unix.SIGHUP, unix.SIGINT, unix.SIGQUIT, unix.SIGTERM, unix.SIGTTIN, unix.SIGTTOU, unix.SIGUSR2}

func init() {
	if os.Getenv(envUpgradeCheck) == "1" {
		fmt.Printf("%s%d\n", upgradeCheckLine, upgradeVersion)
		os.Exit(0)
	}
	if os.Getenv(envUpgradeState) != "" {
		earlySignals = make(chan os.Signal, 64)
		signal.Notify(earlySignals, upgradeSignals...)
	}
}

// TakeEarlySignals returns the signals that arrived since this process
// started as an upgrade, and stops catching them: the caller's handler has
// taken over.
func TakeEarlySignals() []os.Signal {
	if earlySignals == nil {
		return nil
	}
	signal.Stop(earlySignals)
	var sigs []os.Signal
	for {
		select {
		case sig := <-earlySignals:
			sigs = append(sigs, sig)
		default:
			return sigs
		}
	}
}

// upgrade is an upgrade under way.
type upgrade struct {
	waiters []chan<- error
	exe     string
	stage   string // "preflight", "quiesce"
}

// Upgrade re-executes the parent in place. It returns only when the upgrade
// was refused or failed before the exec (a preflight that fails, a stop);
// when it succeeds this process is the new parent, and the caller is gone.
func (s *Supervisor) Upgrade(ctx context.Context) error { return s.await(ctx, s.requestUpgrade) }

// requestUpgrade starts an upgrade, or queues it behind a reload, a
// recycle or the start.
func (s *Supervisor) requestUpgrade(done chan<- error) {
	var waiters []chan<- error
	if done != nil {
		waiters = append(waiters, done)
	}
	switch {
	case s.phase >= stopping:
		notify(waiters, ErrClosed)
	case s.cfg.Command != nil:
		notify(waiters, errors.New("prefork: upgrading in place is not supported for forkline run's command workers"))
	case s.upg != nil:
		s.upg.waiters = append(s.upg.waiters, waiters...)
	case s.phase == starting || s.ho != nil:
		s.upgradeWanted = true
		s.upgradeQueued = append(s.upgradeQueued, waiters...)
		s.log.Info("upgrade queued behind the running start or handover")
	default:
		s.beginUpgrade(waiters)
	}
}

func (s *Supervisor) beginUpgrade(waiters []chan<- error) {
	exe, err := os.Executable()
	if err != nil {
		notify(waiters, fmt.Errorf("prefork: upgrade: %w", err))
		return
	}
	s.upg = &upgrade{waiters: waiters, exe: exe, stage: "preflight"}
	s.log.Info("upgrading the parent in place", "exe", exe, "parent", os.Getpid())
	s.emit(Event{Type: EventUpgrading, Gen: s.gen})
	s.watchers.Go(func() {
		err := preflight(exe)
		s.call(func() { s.preflightDone(err) })
	})
}

// preflight runs the new binary in its check mode: it must print the state
// version this parent writes.
func preflight(exe string) error {
	ctx, cancel := context.WithTimeout(context.Background(), preflightTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe)
	cmd.Env = append(workerEnv(os.Environ(), 0), envUpgradeCheck+"=1")
	out, err := cmd.Output()
	line, _, _ := strings.Cut(string(out), "\n")
	v, ok := strings.CutPrefix(line, upgradeCheckLine)
	switch {
	case err != nil && !ok:
		return fmt.Errorf("prefork: upgrade: the new binary failed its check (%v): it is not a forkline program of this era", err)
	case !ok:
		return fmt.Errorf("prefork: upgrade: the new binary's check printed %q, not a state version", line)
	case v != strconv.Itoa(upgradeVersion):
		return fmt.Errorf("prefork: upgrade: the new binary reads state version %s, this parent writes %d", v, upgradeVersion)
	}
	return nil
}

func (s *Supervisor) preflightDone(err error) {
	u := s.upg
	if u == nil {
		return
	}
	if err == nil && s.phase >= stopping {
		err = ErrClosed
	}
	if err != nil {
		s.failUpgrade(err)
		return
	}
	// Quiesce: every channel stops at a frame boundary. The readers hand
	// the loop what they had decoded, then end (detached); the upgrade
	// goes on once all have.
	u.stage = "quiesce"
	for w := range s.workers {
		s.detachWorker(w)
	}
	s.maybeExec()
}

// detachWorker detaches w's channel, keeping what it had received.
func (s *Supervisor) detachWorker(w *worker) {
	d, ok := w.ch.(detacher)
	if !ok {
		return
	}
	det, err := d.Detach()
	if err != nil {
		s.log.Warn("detaching a worker's channel", w.attrs("err", err)...)
	}
	w.detached = &det
}

type detacher interface{ Detach() (wire.Detached, error) }

// readerDetached: w's reader has ended on its detached channel.
func (s *Supervisor) readerDetached(w *worker) {
	w.readerDone = true
	s.maybeExec()
}

// maybeExec executes the new parent once every live worker's reader has
// ended.
func (s *Supervisor) maybeExec() {
	u := s.upg
	if u == nil || u.stage != "quiesce" {
		return
	}
	if s.phase >= stopping { // a stop overtook it: the workers are told by signal
		s.upg = nil
		notify(u.waiters, ErrClosed)
		return
	}
	for w := range s.workers {
		if w.detached != nil && !w.readerDone {
			return
		}
	}
	err := s.execUpgrade(u)
	// Only a failed exec comes back: the channels are detached, so the
	// parent cannot go on as it was. It gives the state to itself again.
	s.log.Error("upgrade: exec failed, re-executing this binary", "err", err)
	s.rollbackExec(err)
}

func (s *Supervisor) failUpgrade(err error) {
	u := s.upg
	s.upg = nil
	s.counts.upgradesFailed++
	s.log.Error("upgrade refused, this parent carries on", "err", err)
	notify(u.waiters, err)
	s.emit(Event{Type: EventUpgraded, Gen: s.gen, Err: err})
	s.next()
}

// execUpgrade writes the state and executes the new binary in place; it
// returns only if the exec failed.
func (s *Supervisor) execUpgrade(u *upgrade) error {
	st := s.state(u.exe)
	self, err := unix.Open("/proc/self/exe", unix.O_RDONLY, 0) // no O_CLOEXEC: the rollback's
	if err != nil {
		return os.NewSyscallError("open /proc/self/exe", err)
	}
	mfd, err := writeState(st)
	if err != nil {
		unix.Close(self)
		return err
	}
	for _, fd := range st.fds() {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, 0); err != nil {
			return os.NewSyscallError("fcntl", err)
		}
	}
	env := append(withoutUpgradeEnv(os.Environ()),
		envUpgradeState+"="+strconv.Itoa(mfd), envUpgradeExe+"="+strconv.Itoa(self))
	s.log.Info("upgrade: executing the new parent", "exe", u.exe, "workers", len(st.Workers), "parent", os.Getpid())
	return s.execOnSpawner(u.exe, os.Args, env)
}

// rollbackExec re-executes the executable this parent started from, with
// the state of its detached workers, after an exec that failed.
func (s *Supervisor) rollbackExec(cause error) {
	st := s.state(s.upg.exe)
	st.Rollback = cause.Error()
	mfd, err := writeState(st)
	if err == nil {
		for _, fd := range st.fds() {
			unix.FcntlInt(uintptr(fd), unix.F_SETFD, 0)
		}
		env := append(withoutUpgradeEnv(os.Environ()), envUpgradeState+"="+strconv.Itoa(mfd))
		err = s.execOnSpawner("/proc/self/exe", os.Args, env)
	}
	s.log.Error("upgrade: cannot re-execute this binary either; exiting (the workers drain)", "err", err)
	os.Exit(1)
}

// execOnSpawner executes path in place. HUP and INT are ignored across the
// exec (a parent's first moments would die of them: they are lost, not
// fatal); TTIN, TTOU and USR2 are blocked on the thread that execs, the
// image's only thread afterwards, so that they wait, pending, for the new
// parent's handler (Go's runtime leaves them blocked until Notify). TERM
// and QUIT kill a process whose runtime has not installed its handler yet:
// the window is measured in make bench-upgrade.
func (s *Supervisor) execOnSpawner(path string, argv, env []string) error {
	return execInPlace(path, argv, env)
}

func execInPlace(path string, argv, env []string) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // the mask is the thread's; it ends with the exec, or unlocked below
		defer runtime.UnlockOSThread()
		var set, old unix.Sigset_t
		for _, sig := range []syscall.Signal{unix.SIGTTIN, unix.SIGTTOU, unix.SIGUSR2} {
			set.Val[(sig-1)/64] |= 1 << ((uint(sig) - 1) % 64)
		}
		unix.PthreadSigmask(unix.SIG_BLOCK, &set, &old)
		signal.Ignore(unix.SIGHUP, unix.SIGINT)
		err := syscall.Exec(path, argv, env)
		unix.PthreadSigmask(unix.SIG_SETMASK, &old, nil)
		signal.Reset(unix.SIGHUP, unix.SIGINT) // the handler's Notify still holds
		errc <- err
	}()
	return fmt.Errorf("prefork: upgrade: exec %s: %w", path, <-errc)
}

// crashFD is a duplicate of the worker's crash pipe, for the next parent.
func (p *execProcess) crashFD() int { return dupFile(p.crashR) }

// dupFile is a close-on-exec duplicate of f's descriptor, or -1.
func dupFile(f *os.File) int {
	if f == nil {
		return -1
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return -1
	}
	return dupFD(rc)
}
