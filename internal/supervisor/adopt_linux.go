package supervisor

// The new parent's side of an upgrade in place (upgrade_linux.go has the
// old one's): reading the state, checking it against this binary's Config,
// adopting it, or giving it back to the old executable.

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/forkline/forkline/internal/wire"
	"github.com/forkline/forkline/signals"
)

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

// Adopted releases what a rollback would have needed: the new parent
// took the state (the old executable's descriptor would leak at every
// upgrade otherwise).
func (h *UpgradeHandoff) Adopted() {
	if h != nil && h.exeFD >= 0 {
		unix.Close(h.exeFD)
		h.exeFD = -1
	}
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

func (p *adoptedProcess) Signal(sig os.Signal) error { return signalProcess(p.proc, sig) }

func (p *adoptedProcess) Wait() Exit {
	ps, err := p.proc.Wait()
	if p.crashR != nil {
		p.crashR.SetReadDeadline(time.Now().Add(time.Second))
	}
	crash := <-p.crash
	if p.crashR != nil {
		p.crashR.Close()
	}
	if err != nil || ps == nil {
		// Reaped by the previous parent in its last moments.
		return Exit{Code: -1, Status: "exited during the parent's upgrade", Crash: crash}
	}
	ex := processExit(ps, nil)
	ex.Crash = crash
	return ex
}

// crashFD is a duplicate of the worker's crash pipe, for the next parent.
func (p *adoptedProcess) crashFD() int { return dupFile(p.crashR) }

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
