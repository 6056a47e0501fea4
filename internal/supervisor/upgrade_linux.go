package supervisor

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
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
	"github.com/forkline/forkline/signals"
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

// UpgradeState is what a parent hands the one it re-executes.
type upgradeState struct {
	Version  int    `json:"version"`
	FromExe  string `json:"from_exe"`
	Rollback string `json:"rollback,omitempty"` // why the new parent gave it back

	Gen, LastGen, Target     int
	ReloadsOK, ReloadsFailed int
	Respawns                 int
	Relayed, Dropped         int64
	Upgrades, UpgradesFailed int

	Sockets []Inherited      `json:"sockets"` // slot sockets, shared sockets and steering groups, by store name
	Slots   []upgradeSlot    `json:"slots"`
	Workers []upgradeWorker  `json:"workers"`
	Carried map[string]int   `json:"carried,omitempty"` // the caller's descriptors (CarryFDs)
	Signals []string         `json:"signals,omitempty"` // caught while the upgrade ran, to apply after it
	Extra   map[string]int64 `json:"-"`
}

type upgradeSlot struct {
	ID, Restarts, Failures int
	Parked                 bool
	Requests               int64
	CPU                    time.Duration
}

type upgradeWorker struct {
	ID, Gen, PID int
	State        State
	Serving      bool // its slot's current worker (else a draining one)
	Reason       string
	Started      time.Time
	ReadyAt      time.Time
	Restarts     int
	Chan         int
	Pending      []byte
	PendingFDs   []int
	Limit        int
	Beat         int // -1: none
	Crash        int // -1: none
	Requests     int64
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
func (s *Supervisor) Upgrade(ctx context.Context) error {
	done := make(chan error, 1)
	select {
	case s.calls <- func() { s.requestUpgrade(done) }:
	case <-s.done:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-done:
		return err
	case <-s.done:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

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

// state is what this parent hands over.
func (s *Supervisor) state(exe string) *upgradeState {
	st := &upgradeState{Version: upgradeVersion, FromExe: exe, Gen: s.gen, LastGen: s.lastGen, Target: s.target,
		ReloadsOK: s.counts.reloadsOK, ReloadsFailed: s.counts.reloadsFailed, Respawns: s.counts.respawns,
		Relayed: s.counts.relayed.Load(), Dropped: s.counts.dropped.Load(),
		Upgrades: s.counts.upgrades, UpgradesFailed: s.counts.upgradesFailed}
	for i, ep := range s.eps {
		if ep.shared >= 0 {
			st.Sockets = append(st.Sockets, Inherited{FD: ep.shared, Name: storeName(ep, 0)})
		}
		if ep.steer != nil {
			for _, fd := range ep.steer.FDs() {
				st.Sockets = append(st.Sockets, Inherited{FD: fd, Name: storeName(ep, 0) + steerSuffix})
			}
		}
		for _, sl := range s.slots {
			if ep.shared < 0 && sl.fds[i] >= 0 {
				st.Sockets = append(st.Sockets, Inherited{FD: sl.fds[i], Name: storeName(ep, sl.id)})
			}
		}
	}
	for _, sl := range s.slots {
		st.Slots = append(st.Slots, upgradeSlot{ID: sl.id, Restarts: sl.restarts, Failures: sl.failures,
			Parked: sl.parked, Requests: sl.requests, CPU: sl.cpu})
	}
	for w := range s.workers {
		if w.detached == nil || w.detached.FD < 0 {
			continue // its channel could not be detached: it is left to end
		}
		uw := upgradeWorker{ID: w.id, Gen: w.gen, PID: w.pid, State: w.state, Serving: w.slot.cur == w,
			Started: w.started, ReadyAt: w.readyAt, Restarts: w.restarts, Chan: w.detached.FD,
			Pending: w.detached.Pending, PendingFDs: w.detached.FDs, Limit: w.ch.SendLimit(),
			Beat: -1, Crash: -1, Requests: w.requests.Load()}
		if w.end != nil {
			uw.Reason = w.end.reason
		}
		if b, ok := w.beat.(*dgramBeat); ok {
			uw.Beat = dupFD(b.rc)
		}
		if p, ok := w.proc.(interface{ crashFD() int }); ok {
			uw.Crash = p.crashFD()
		}
		st.Workers = append(st.Workers, uw)
	}
	if s.cfg.CarryFDs != nil {
		st.Carried = s.cfg.CarryFDs()
	}
	sigs := s.upgradeSigs
	if s.queued != nil { // a reload asked for while the upgrade ran
		sigs = append(sigs, unix.SIGHUP)
	}
	for _, sig := range sigs {
		if n, ok := sig.(syscall.Signal); ok {
			st.Signals = append(st.Signals, strconv.Itoa(int(n)))
		}
	}
	return st
}

func dupFD(rc syscall.RawConn) int {
	nfd := -1
	rc.Control(func(fd uintptr) { nfd, _ = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) })
	return nfd
}

// fds returns every descriptor st names.
func (st *upgradeState) fds() []int {
	var fds []int
	for _, in := range st.Sockets {
		fds = append(fds, in.FD)
	}
	for _, w := range st.Workers {
		fds = append(fds, w.Chan)
		fds = append(fds, w.PendingFDs...)
		if w.Beat >= 0 {
			fds = append(fds, w.Beat)
		}
		if w.Crash >= 0 {
			fds = append(fds, w.Crash)
		}
	}
	for _, fd := range st.Carried {
		fds = append(fds, fd)
	}
	return fds
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
func (p *execProcess) crashFD() int {
	if p.crashR == nil {
		return -1
	}
	rc, err := p.crashR.SyscallConn()
	if err != nil {
		return -1
	}
	return dupFD(rc)
}

func writeState(st *upgradeState) (int, error) {
	data, err := json.Marshal(st)
	if err != nil {
		return -1, err
	}
	mfd, err := unix.MemfdCreate("forkline-upgrade-state", 0) // inherited by the exec
	if err != nil {
		return -1, os.NewSyscallError("memfd_create", err)
	}
	for len(data) > 0 {
		n, err := unix.Write(mfd, data)
		if err != nil {
			unix.Close(mfd)
			return -1, os.NewSyscallError("write", err)
		}
		data = data[n:]
	}
	if _, err := unix.Seek(mfd, 0, 0); err != nil {
		unix.Close(mfd)
		return -1, os.NewSyscallError("lseek", err)
	}
	return mfd, nil
}

func withoutUpgradeEnv(env []string) []string {
	var out []string
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		if name != envUpgradeState && name != envUpgradeExe && name != envUpgradeRollback && name != envUpgradeCheck {
			out = append(out, kv)
		}
	}
	return out
}

// PendingUpgrade reads the state an upgrade handed this process, if it is
// one: the parent adopts it instead of binding and starting workers. It
// takes the variables out of the environment.
func PendingUpgrade() (*UpgradeHandoff, error) {
	v := os.Getenv(envUpgradeState)
	if v == "" {
		return nil, nil
	}
	exeFD := -1
	if e := os.Getenv(envUpgradeExe); e != "" {
		exeFD, _ = strconv.Atoi(e)
	}
	os.Unsetenv(envUpgradeState)
	os.Unsetenv(envUpgradeExe)
	fd, err := strconv.Atoi(v)
	if err != nil || fd < 0 {
		return nil, fmt.Errorf("prefork: %s=%q: not a descriptor", envUpgradeState, v)
	}
	f := os.NewFile(uintptr(fd), "forkline-upgrade-state")
	defer f.Close()
	var st upgradeState
	if err := json.NewDecoder(bufio.NewReader(f)).Decode(&st); err != nil {
		return &UpgradeHandoff{exeFD: exeFD}, fmt.Errorf("prefork: reading the upgrade's state: %w", err)
	}
	h := &UpgradeHandoff{st: &st, exeFD: exeFD}
	if st.Version != upgradeVersion {
		return h, fmt.Errorf("prefork: the upgrade's state is version %d, this binary reads %d", st.Version, upgradeVersion)
	}
	for _, fd := range st.fds() {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
			return h, fmt.Errorf("prefork: the upgrade's state names descriptor %d, which is not open", fd)
		}
		unix.CloseOnExec(fd)
	}
	return h, nil
}

// UpgradeHandoff is an upgrade's state as the new parent received it.
type UpgradeHandoff struct {
	st    *upgradeState
	exeFD int // the old executable, to roll back to; -1 in a rollback
}

// Carried returns the descriptor the old parent carried under name, or -1.
func (h *UpgradeHandoff) Carried(name string) int {
	if h == nil || h.st == nil {
		return -1
	}
	if fd, ok := h.st.Carried[name]; ok {
		return fd
	}
	return -1
}

// Rollback gives the state back to the old executable: it re-executes it in
// place, as the upgrade executed this one. It returns only if that fails.
func (h *UpgradeHandoff) Rollback(cause error) error {
	if h == nil || h.exeFD < 0 || h.st == nil {
		return fmt.Errorf("prefork: cannot roll the upgrade back: %w", cause)
	}
	h.st.Rollback = cause.Error()
	mfd, err := writeState(h.st)
	if err != nil {
		return err
	}
	for _, fd := range h.st.fds() {
		unix.FcntlInt(uintptr(fd), unix.F_SETFD, 0)
	}
	env := append(withoutUpgradeEnv(os.Environ()), envUpgradeState+"="+strconv.Itoa(mfd))
	path := "/proc/self/fd/" + strconv.Itoa(h.exeFD)
	return fmt.Errorf("prefork: rolling the upgrade back: %w", execInPlace(path, os.Args, env))
}

func (h *UpgradeHandoff) inherited() []Inherited { return h.st.Sockets }

// checkUpgrade refuses a state this binary's Config cannot serve: a socket
// of an address it does not have (by name), or of a fixed address it does
// not serve. It runs before anything of the state is taken, so that the
// old parent can be given it back whole.
func (s *Supervisor) checkUpgrade() error {
	h := s.cfg.Upgrade
	if h == nil {
		return nil
	}
	for _, in := range h.st.Sockets {
		var ep *endpoint
		for _, a := range s.cfg.Addrs {
			e := &endpoint{Address: a}
			base := storeName(e, 0)
			if in.Name == base || in.Name == base+steerSuffix || strings.HasPrefix(in.Name, base+".") {
				ep = e
				break
			}
		}
		if ep == nil {
			return fmt.Errorf("prefork: the upgrade's socket %q serves no address of this binary's Config", in.Name)
		}
		if strings.HasSuffix(in.Name, steerSuffix) || ep.unix() {
			continue
		}
		if _, port, err := net.SplitHostPort(ep.Addr); err == nil && port != "0" {
			if _, bound, err := sockName(in.FD); err == nil && !sameAddr(ep, bound) {
				return fmt.Errorf("prefork: the upgrade's socket %q is bound to %s; this binary's Config serves %s", in.Name, bound, ep.Addr)
			}
		}
	}
	return nil
}

// resumeUpgrade adopts the state, respawns the slots it left empty,
// applies the signals that came during the upgrade, and says so.
func (s *Supervisor) resumeUpgrade() error {
	st := s.cfg.Upgrade.st
	if err := s.adoptUpgrade(st); err != nil {
		return err
	}
	var err error
	if st.Rollback != "" {
		err = errors.New("the new parent gave the state back: " + st.Rollback)
		s.counts.upgradesFailed++
		s.log.Error("upgrade rolled back: this is the previous parent again", "err", err, "parent", os.Getpid())
	} else {
		s.counts.upgrades++
		s.log.Info("upgraded in place", "from", st.FromExe, "workers", len(st.Workers), "gen", s.gen, "parent", os.Getpid())
	}
	s.emit(Event{Type: EventUpgraded, Gen: s.gen, Err: err})
	for _, sl := range s.slots {
		if sl.cur == nil && !sl.parked {
			s.spawn(sl, s.gen, nil)
		}
	}
	for _, v := range st.Signals {
		if n, err := strconv.Atoi(v); err == nil {
			sig := syscall.Signal(n)
			s.onSignal(sig, signals.ActionOf(sig))
		}
	}
	s.next()
	return nil
}

// adoptUpgrade makes the supervisor the one the old parent was: its
// counters, slots and workers (their processes, channels, heartbeats). The
// sockets were adopted by New (cfg.Inherited).
func (s *Supervisor) adoptUpgrade(st *upgradeState) error {
	s.gen, s.lastGen, s.target = st.Gen, st.LastGen, st.Target
	s.counts.reloadsOK, s.counts.reloadsFailed, s.counts.respawns = st.ReloadsOK, st.ReloadsFailed, st.Respawns
	s.counts.relayed.Store(st.Relayed)
	s.counts.dropped.Store(st.Dropped)
	s.counts.upgrades, s.counts.upgradesFailed = st.Upgrades, st.UpgradesFailed
	byID := map[int]*slot{}
	for _, sl := range s.slots {
		byID[sl.id] = sl
	}
	for _, us := range st.Slots {
		if sl := byID[us.ID]; sl != nil {
			sl.restarts, sl.failures, sl.parked, sl.requests, sl.cpu = us.Restarts, us.Failures, us.Parked, us.Requests, us.CPU
		}
	}
	s.phase = serving
	for _, uw := range st.Workers {
		sl := byID[uw.ID]
		if sl == nil {
			return fmt.Errorf("prefork: the upgrade's state has worker %d and no slot %d", uw.ID, uw.ID)
		}
		if err := s.adoptWorker(sl, uw); err != nil {
			return err
		}
	}
	return nil
}

func (s *Supervisor) adoptWorker(sl *slot, uw upgradeWorker) error {
	conn, err := wire.NewConnPending(os.NewFile(uintptr(uw.Chan), "forkline-channel"),
		wire.Options{MaxPayload: s.cfg.MaxMessageSize}, uw.Pending, uw.PendingFDs)
	if err != nil {
		return fmt.Errorf("prefork: adopting worker %d's channel: %w", uw.ID, err)
	}
	conn.SetSendLimit(uw.Limit)
	proc, err := os.FindProcess(uw.PID)
	if err != nil {
		conn.Close()
		return fmt.Errorf("prefork: adopting worker %d (pid %d): %w", uw.ID, uw.PID, err)
	}
	p := &adoptedProcess{pid: uw.PID, proc: proc, crash: make(chan string, 1)}
	if uw.Crash >= 0 {
		p.crashR = os.NewFile(uintptr(uw.Crash), "forkline-crash")
		go p.readCrash()
	} else {
		p.crash <- ""
	}
	w := &worker{slot: sl, id: uw.ID, gen: uw.Gen, pid: uw.PID, proc: p, ch: connChannel{conn},
		started: uw.Started, readyAt: uw.ReadyAt, restarts: uw.Restarts, state: uw.State}
	w.requests.Store(uw.Requests)
	if uw.Beat >= 0 {
		if b, err := beatFromFD(uw.Beat); err == nil {
			w.beat = b
		}
	}
	if uw.Serving {
		sl.cur = w
	}
	s.workers[w] = struct{}{}
	switch uw.State {
	case Starting, Online:
		w.timer = s.after(s.cfg.ReadyTimeout, func() { s.onReadyTimeout(w) })
	case Draining:
		w.setEnd(ending{kind: endAsked, reason: uw.Reason})
		grace := s.cfg.StopTimeout
		w.timer = s.after(grace, func() {
			if _, live := s.workers[w]; live {
				s.log.Warn("worker still running after its grace, killing it", w.attrs("grace", grace, "reason", uw.Reason)...)
				w.proc.Signal(syscall.SIGKILL)
			}
		})
	default:
		w.timer = time.NewTimer(time.Hour)
		w.timer.Stop()
	}
	s.routesDirty = true
	s.watchers.Go(func() { s.watch(w) })
	if w.beat != nil {
		s.watchers.Go(func() { s.beatLoop(w) })
	}
	return nil
}

// adoptedProcess is a worker the previous parent started: still this
// process's child, reaped through a pidfd (os.FindProcess).
type adoptedProcess struct {
	pid    int
	proc   *os.Process
	crashR *os.File
	crash  chan string
}

func (p *adoptedProcess) Pid() int { return p.pid }

func (p *adoptedProcess) Signal(sig os.Signal) error {
	err := p.proc.Signal(sig)
	if errors.Is(err, os.ErrProcessDone) {
		return nil
	}
	return err
}

func (p *adoptedProcess) Wait() Exit {
	ps, err := p.proc.Wait()
	if p.crashR != nil {
		p.crashR.SetReadDeadline(time.Now().Add(time.Second))
	}
	ex := Exit{Code: -1, Status: "exited during the parent's upgrade", Crash: <-p.crash}
	if p.crashR != nil {
		p.crashR.Close()
	}
	if err != nil || ps == nil {
		return ex // reaped by the previous parent in its last moments
	}
	ex.Status = ps.String()
	ex.Code = ps.ExitCode()
	if st, ok := ps.Sys().(syscall.WaitStatus); ok && st.Signaled() {
		ex.Signal = st.Signal()
		ex.Status = "signal: " + st.Signal().String()
	} else {
		ex.Status = "exit status " + strconv.Itoa(ex.Code)
	}
	ex.CPU = ps.UserTime() + ps.SystemTime()
	return ex
}

func (p *adoptedProcess) readCrash() {
	ep := &execProcess{crashR: p.crashR, crash: p.crash}
	ep.readCrash()
}

// beatFromFD is the parent's end of a heartbeat socket handed over.
func beatFromFD(fd int) (*dgramBeat, error) {
	f := os.NewFile(uintptr(fd), "forkline-heartbeat")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return nil, err
	}
	uc := c.(*net.UnixConn)
	rc, err := uc.SyscallConn()
	if err != nil {
		uc.Close()
		return nil, err
	}
	return &dgramBeat{uc: uc, rc: rc}, nil
}
