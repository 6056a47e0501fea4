package supervisor

// What an upgrade in place hands the next parent, and how it travels: a
// memfd of JSON, and descriptors kept open across the exec.

import (
	"encoding/json"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

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
