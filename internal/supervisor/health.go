package supervisor

import (
	"fmt"
	"syscall"
	"time"
)

// Health: heartbeats and MaxMemory, both on the loop's timers.

// ping is a heartbeat sent and not answered yet.
type ping struct {
	seq uint64
	at  time.Duration // the beat clock when it was sent
}

// heartbeat runs every HeartbeatInterval: it judges each serving worker by
// its oldest unanswered ping, then pings it again.
//
// Silence is measured on the beat clock, which advances by at most one
// interval per tick: when the parent itself did not run (stopped, paused
// with its VM, its loop held up), the time it lost counts against nobody.
// Pings travel on a socket of their own and are answered by a goroutine
// that runs no user code, so a slow OnMessage on either side cannot make a
// healthy worker look hung.
func (s *Supervisor) heartbeat() {
	now := time.Now()
	elapsed := now.Sub(s.lastTick)
	s.lastTick = now
	if lost := elapsed - s.cfg.HeartbeatInterval; lost > s.cfg.HeartbeatInterval {
		s.log.Warn("the parent did not run on time; heartbeat silence does not count the gap", "late", lost.Round(time.Millisecond))
	}
	s.beatClock += min(elapsed, s.cfg.HeartbeatInterval)
	for w := range s.workers {
		if w.beat == nil || w.state != Listening {
			continue
		}
		answered := w.pong.Load()
		for len(w.unanswered) > 0 && w.unanswered[0].seq <= answered {
			w.unanswered = w.unanswered[1:]
		}
		if len(w.unanswered) > 0 {
			if silent := s.beatClock - w.unanswered[0].at; silent >= s.cfg.HeartbeatTimeout {
				s.hung(w, silent)
				continue
			}
		}
		w.pinged++
		w.unanswered = append(w.unanswered, ping{seq: w.pinged, at: s.beatClock})
		w.pingSent.Store(now.UnixNano())
		w.beat.Ping(w.pinged) // a full socket loses the ping: it stays unanswered
	}
}

// hung replaces a worker that did not answer: SIGTERM, then SIGKILL.
func (s *Supervisor) hung(w *worker, silent time.Duration) {
	s.log.Error("worker missed its heartbeat, replacing it", w.attrs("silent", silent.Round(time.Millisecond))...)
	e := ending{kind: endFailed, reason: "missed heartbeat", err: fmt.Errorf("no heartbeat for %v", s.cfg.HeartbeatTimeout)}
	s.stopWorker(w, e, syscall.SIGTERM, killGrace)
}

// beatLoop is w's beat goroutine: it records the answers, until the beat
// socket closes (watch closes it when w is gone).
func (s *Supervisor) beatLoop(w *worker) {
	for {
		seq, err := w.beat.Pong()
		if err != nil {
			return
		}
		if seq > w.pong.Load() {
			w.pong.Store(seq)
			w.rtt.Store(time.Now().UnixNano() - w.pingSent.Load())
		}
	}
}

// checkMemory recycles the serving workers over MaxMemory. A worker over
// the limit as soon as it serves would be recycled every second for ever
// (the limit is below what a fresh worker needs): its slot waits instead,
// from memoryBackoffMin doubling up to memoryBackoffMax, and the log says
// why.
func (s *Supervisor) checkMemory() {
	now := time.Now()
	for _, sl := range s.slots {
		w := sl.cur
		if w == nil || w.state != Listening || s.ho != nil && s.ho.next[sl] != nil || now.Before(sl.memNotBefore) {
			continue
		}
		rss, err := s.cfg.MemoryOf(w.pid)
		if err != nil {
			continue
		}
		if rss <= s.cfg.MaxMemory {
			sl.memDelay = 0
			continue
		}
		if fresh := now.Sub(w.readyAt) < 2*memoryCheckInterval; fresh {
			sl.memDelay = min(max(2*sl.memDelay, memoryBackoffMin), memoryBackoffMax)
			sl.memNotBefore = now.Add(sl.memDelay)
			s.log.Warn("MaxMemory is below what a fresh worker uses: not recycling it before the delay",
				w.attrs("rss", rss, "max_memory", s.cfg.MaxMemory, "delay", sl.memDelay)...)
			continue
		}
		s.requestRecycle(w, fmt.Sprintf("RSS %d bytes over MaxMemory %d", rss, s.cfg.MaxMemory))
	}
}
