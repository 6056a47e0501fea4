//go:build unix

package prefork

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/forkline/forkline/internal/wire"
)

// Reloads, recycles, heartbeats and scaling: the supervisor's changes to a
// running cluster. Everything here runs on the supervisor goroutine, except
// the entry points reload and setWorkers, which hand over to it.

// reload starts a reload (or joins the pending one) and waits for it.
func (s *supervisor) reload(ctx context.Context) error {
	done := make(chan error, 1)
	select {
	case s.calls <- func() { s.startReload(done) }:
	case <-s.done:
		return ErrServerClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-done:
		return err
	case <-s.done:
		return ErrServerClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

// startReload begins a reload, or queues one behind the running reload.
// done, if not nil, receives the outcome.
func (s *supervisor) startReload(done chan error) {
	if s.stopping {
		if done != nil {
			done <- ErrServerClosed
		}
		return
	}
	if s.reloading != nil || !s.ready {
		// Coalesce: every request during a reload folds into one more.
		s.againPending = true
		if done != nil {
			s.reloadAgain = append(s.reloadAgain, done)
		}
		return
	}
	// A recycle in flight is overtaken: the reload replaces every worker.
	for _, sl := range s.slots {
		if sl.next != nil {
			s.drain(sl.next)
			sl.next = nil
		}
	}
	s.recycling, s.recycleQueue = nil, nil
	s.lastGen++
	r := &reloadState{gen: s.lastGen}
	if done != nil {
		r.waiters = append(r.waiters, done)
	}
	s.reloading = r
	s.log.Info("reloading", "gen", r.gen, "exe", s.exe)
	// Each new worker has Config.ReadyTimeout to become ready; one that is
	// killed for being late aborts the reload like any failed start.
	for _, sl := range s.slots {
		if s.reloading != r { // a start failed and aborted it
			return
		}
		s.start(sl, r.gen, true)
	}
}

func (s *supervisor) maybeFinishReload() {
	r := s.reloading
	for _, sl := range s.slots {
		if sl.next == nil || sl.next.state != stateReady {
			return
		}
	}
	for _, sl := range s.slots {
		old := sl.cur
		sl.cur, sl.next = sl.next, nil
		sl.failures = 0
		if old != nil {
			s.drain(old)
		}
	}
	s.routesDirty = true
	s.gen = r.gen
	s.log.Info("reloaded", "gen", r.gen)
	s.finishReload(nil)
}

// abortReload stops the new generation; the old one keeps serving.
func (s *supervisor) abortReload(err error) {
	if s.reloading == nil {
		return
	}
	s.log.Error("reload failed, the old generation keeps serving", "gen", s.reloading.gen, "err", err)
	for _, sl := range s.slots {
		if w := sl.next; w != nil {
			sl.next = nil
			s.drain(w)
		}
	}
	s.finishReload(err)
}

func (s *supervisor) finishReload(err error) {
	r := s.reloading
	if r == nil {
		for _, done := range s.reloadAgain {
			done <- err
		}
		s.reloadAgain = nil
		return
	}
	s.reloading = nil
	for _, done := range r.waiters {
		done <- err
	}
	s.startPendingReload()
}

// startPendingReload starts the reload that requests coalesced into while
// another reload (or the first start) was running.
func (s *supervisor) startPendingReload() {
	if s.stopping {
		for _, done := range s.reloadAgain {
			done <- ErrServerClosed
		}
		s.reloadAgain, s.againPending = nil, false
		return
	}
	if !s.againPending {
		return
	}
	s.againPending = false
	waiters := s.reloadAgain
	s.reloadAgain = nil
	s.startReload(nil)
	if s.reloading != nil {
		s.reloading.waiters = waiters
		return
	}
	for _, done := range waiters {
		done <- errors.New("prefork: reload could not start")
	}
}

// requestRecycle queues w's replacement: a new worker in its slot, ready
// before w drains. One slot recycles at a time.
func (s *supervisor) requestRecycle(w *worker, reason string) {
	if w.slot.cur != w || w.state != stateReady || w.recycled || s.stopping {
		return
	}
	w.recycled = true
	s.log.Info("recycling worker", w.attrs("reason", reason)...)
	s.recycleQueue = append(s.recycleQueue, w.slot)
	s.nextRecycle()
}

func (s *supervisor) nextRecycle() {
	if s.recycling != nil || s.reloading != nil || s.stopping {
		return
	}
	for len(s.recycleQueue) > 0 {
		sl := s.recycleQueue[0]
		s.recycleQueue = s.recycleQueue[1:]
		if sl.removed || sl.cur == nil || sl.next != nil {
			continue
		}
		s.recycling = sl
		s.start(sl, s.gen, true)
		return
	}
}

// endRecycle ends sl's recycle; err says why it failed, if it did.
func (s *supervisor) endRecycle(sl *slot, err error) {
	if s.recycling == sl {
		s.recycling = nil
	}
	if err != nil && sl.cur != nil {
		sl.cur.recycled = false // it may ask again
	}
	s.nextRecycle()
}

// heartbeat probes every serving worker and kills those that stopped
// answering.
func (s *supervisor) heartbeat() {
	now := time.Now()
	for w := range s.workers {
		if w.state != stateReady || w.hung {
			continue
		}
		if silent := now.Sub(time.Unix(0, w.lastPong.Load())); silent > s.cfg.HeartbeatTimeout {
			w.hung = true
			s.log.Error("worker missed its heartbeat, replacing it", w.attrs("silent", silent.Round(time.Millisecond))...)
			w.cmd.Process.Signal(syscall.SIGTERM)
			s.after(hungKillGrace, func() {
				if _, live := s.workers[w]; live {
					w.cmd.Process.Kill()
				}
			})
			continue
		}
		w.conn.SendControl(&wire.Frame{Type: wire.TypePing, To: uint32(w.id), ID: uint64(now.UnixNano())})
	}
}

// checkMemory recycles the serving workers over MaxMemory.
func (s *supervisor) checkMemory() {
	for _, sl := range s.slots {
		w := sl.cur
		if w == nil || w.state != stateReady || w.recycled {
			continue
		}
		if rss, err := residentBytes(w.pid); err == nil && rss > s.cfg.MaxMemory {
			s.requestRecycle(w, fmt.Sprintf("RSS %d bytes over MaxMemory %d", rss, s.cfg.MaxMemory))
		}
	}
}

// residentBytes reads a process's resident set size (Linux).
func residentBytes(pid int) (int64, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/statm")
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(data))
	if len(f) < 2 {
		return 0, fmt.Errorf("statm: %q", data)
	}
	pages, err := strconv.ParseInt(f[1], 10, 64)
	return pages * int64(os.Getpagesize()), err
}

// scale changes the number of slots to n.
func (s *supervisor) scale(n int) error {
	switch {
	case s.stopping:
		return ErrServerClosed
	case n < 1:
		return fmt.Errorf("prefork: cannot run %d workers: at least 1", n)
	case s.reloading != nil:
		return errors.New("prefork: cannot scale during a reload")
	}
	for len(s.slots) < n {
		sl, err := s.addSlot()
		if err != nil {
			return err
		}
		s.log.Info("scaling up", "worker", sl.id, "workers", len(s.slots))
		s.start(sl, s.gen, false)
	}
	if len(s.slots) > n && s.mode == ModeReusePort {
		if v, err := os.ReadFile("/proc/sys/net/ipv4/tcp_migrate_req"); err == nil && strings.TrimSpace(string(v)) == "0" {
			s.log.Warn("net.ipv4.tcp_migrate_req is 0: connections still queued on a removed slot's socket are reset when it closes; set it to 1 (Linux 5.14+) to hand them to the other sockets")
		}
	}
	for len(s.slots) > n {
		sl := s.slots[len(s.slots)-1]
		s.slots = s.slots[:len(s.slots)-1]
		sl.removed = true
		if sl.respawn != nil {
			sl.respawn.Stop()
		}
		// The parent's copy closes first: the worker accepts from its own
		// copy until it drains, and its close is the socket's last.
		if sl.own {
			unix.Close(sl.fd)
			sl.fd = -1
		}
		for _, w := range []*worker{sl.cur, sl.next} {
			if w != nil {
				s.drain(w)
			}
		}
		sl.cur, sl.next = nil, nil
		if s.recycling == sl {
			s.recycling = nil
		}
		s.routesDirty = true
		s.log.Info("scaling down", "worker", sl.id, "workers", len(s.slots))
	}
	s.nextRecycle()
	return nil
}

func (s *supervisor) setWorkers(n int) error {
	return s.do(func() error { return s.scale(n) })
}
