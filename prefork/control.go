package prefork

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/forkline/forkline/internal/control"
	"github.com/forkline/forkline/internal/supervisor"
	"github.com/forkline/forkline/signals"
)

// The control socket (Config.ControlSocket): the forkline command's way
// into a running parent. Package control speaks the protocol; this file
// answers it with the cluster.

// controlSocket is a running control socket: its listener until Serve
// takes it, and the event subscriptions.
type controlSocket struct {
	c       *Cluster
	ln      *net.UnixListener
	log     *slog.Logger
	started time.Time

	mu     sync.Mutex
	subs   map[chan control.Event]struct{}
	closed bool
}

// openControl creates the control socket, or returns nil when none is
// configured.
func openControl(c *Cluster, cfg Config, up *supervisor.UpgradeHandoff) (*controlSocket, error) {
	path := controlPath(cfg)
	if path == "" {
		return nil, nil
	}
	var ln *net.UnixListener
	if fd := up.Carried(carriedControl); fd >= 0 {
		// The previous parent's socket, carried by its upgrade.
		f := os.NewFile(uintptr(fd), "forkline-control")
		l, err := net.FileListener(f) // a duplicate: f's is closed
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("prefork: the control socket the upgrade carried: %w", err)
		}
		ln = l.(*net.UnixListener)
		ln.SetUnlinkOnClose(true)
	} else {
		var err error
		if ln, err = control.Listen(path); err != nil {
			return nil, fmt.Errorf("prefork: Config.ControlSocket: %w", err)
		}
	}
	return &controlSocket{c: c, ln: ln, log: cfg.Logger, started: time.Now(), subs: map[chan control.Event]struct{}{}}, nil
}

// serve answers the socket until ctx ends (when the cluster has stopped:
// a stop's stream ends with its last worker), then removes it.
func (cs *controlSocket) serve(ctx context.Context) error {
	err := control.Serve(ctx, cs.ln, cs, cs.log)
	cs.end()
	return err
}

// end closes every subscription: the cluster has stopped.
func (cs *controlSocket) end() {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	cs.closed = true
	for ch := range cs.subs {
		close(ch)
		delete(cs.subs, ch)
	}
}

// publish hands ev to every subscriber that has room; a slow one misses it
// rather than hold the cluster's events up.
func (cs *controlSocket) publish(ev supervisor.Event) {
	out := controlEvent(ev)
	cs.mu.Lock()
	defer cs.mu.Unlock()
	for ch := range cs.subs {
		select {
		case ch <- out:
		default:
		}
	}
}

func controlEvent(ev supervisor.Event) control.Event {
	out := control.Event{Time: time.Now(), Type: EventType(ev.Type).String(), ID: ev.Worker.ID, PID: ev.Worker.PID,
		Gen: ev.Worker.Gen, Addr: ev.Addr, ExitCode: ev.ExitCode, Asked: ev.Asked, Reason: ev.Reason}
	if ev.Worker.PID != 0 {
		out.State, out.Eligible = ev.Worker.State.String(), ev.Worker.Eligible
	} else {
		out.Gen = ev.Gen
	}
	if ev.Signal != nil {
		out.Signal = signals.Name(ev.Signal)
	}
	if ev.Err != nil {
		out.Err = publicErr(ev.Err).Error()
	}
	return out
}

func (cs *controlSocket) Status(ctx context.Context) (control.Status, error) {
	st, err := cs.c.Stats(ctx)
	if err != nil {
		return control.Status{}, err
	}
	out := control.Status{PID: st.PID, Started: cs.started, Generation: st.Generation, Workers: st.Workers,
		ReloadsOK: st.ReloadsOK, ReloadsFailed: st.ReloadsFailed, Respawns: st.Respawns,
		Upgrades: st.Upgrades, UpgradesFailed: st.UpgradesFailed,
		MessagesRelayed: st.MessagesRelayed, MessagesDropped: st.MessagesDropped}
	slots := map[int]SlotStats{}
	for _, sl := range st.Slots {
		slots[sl.ID] = sl
	}
	for _, p := range st.Processes {
		sl, ok := slots[p.ID]
		if !ok {
			sl = SlotStats{Queue: -1, Backlog: -1}
		}
		rtt := -1.0
		if p.HeartbeatRTT > 0 {
			rtt = float64(p.HeartbeatRTT) / float64(time.Millisecond)
		}
		out.Slots = append(out.Slots, control.Slot{ID: p.ID, PID: p.PID, Gen: p.Gen, State: p.State.String(),
			Eligible: p.Eligible, Started: p.Started, Restarts: p.Restarts, RSS: p.RSS, CPU: p.CPU.Seconds(),
			Queue: sl.Queue, Backlog: sl.Backlog, Requests: p.Requests, RTT: rtt})
	}
	return out, nil
}

func (cs *controlSocket) Reload(ctx context.Context) error { return cs.c.Reload(ctx) }

func (cs *controlSocket) Scale(n int) error { return cs.c.SetWorkers(n) }

func (cs *controlSocket) Kill(id int, sig syscall.Signal) error { return cs.c.Kill(id, sig) }

// Stop begins a graceful stop. It cannot wait for it: the stop ends with
// this socket's server.
func (cs *controlSocket) Stop(context.Context) error {
	s, err := cs.c.parent()
	if err != nil {
		return err
	}
	cs.log.Info("stop asked on the control socket")
	s.Terminate() // as SIGTERM: Serve returns nil
	return nil
}

func (cs *controlSocket) Events(ctx context.Context) (<-chan control.Event, error) {
	ch := make(chan control.Event, 256)
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.closed {
		return nil, ErrNotRunning
	}
	cs.subs[ch] = struct{}{}
	context.AfterFunc(ctx, func() {
		cs.mu.Lock()
		defer cs.mu.Unlock()
		if _, ok := cs.subs[ch]; ok {
			delete(cs.subs, ch)
			close(ch)
		}
	})
	return ch, nil
}

// Upgrade re-executes the parent in place; the client learns the outcome
// from the new parent's status (its connection ends with this process's
// image).
func (cs *controlSocket) Upgrade(ctx context.Context) error { return cs.c.Upgrade(ctx) }

// carriedControl names the control socket among what an upgrade carries.
const carriedControl = "control"

// carry is a duplicate of the control socket's descriptor, for the next
// parent (Supervisor's CarryFDs).
func (cs *controlSocket) carry() map[string]int {
	f, err := cs.ln.File() // a duplicate; the listener stays as it is
	if err != nil {
		return nil
	}
	return map[string]int{carriedControl: int(f.Fd())} // f stays open: the exec takes it
}

// controlPath is Config.ControlSocket, by default
// $RUNTIME_DIRECTORY/forkline.sock under systemd (RuntimeDirectory=; the
// first directory when it names several), and none without it; "off"
// turns it off.
func controlPath(cfg Config) string {
	switch cfg.ControlSocket {
	case "off":
		return ""
	case "":
		if dir, _, _ := strings.Cut(os.Getenv("RUNTIME_DIRECTORY"), ":"); dir != "" {
			return filepath.Join(dir, "forkline.sock")
		}
		return ""
	}
	return cfg.ControlSocket
}
