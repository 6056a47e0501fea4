package supervisor

import (
	"context"
	"encoding/binary"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/forkline/forkline/internal/wire"
)

// Stats is a snapshot of the cluster (package prefork exports it).
type Stats struct {
	Gen                      int // the serving generation
	Wanted                   int // the slots wanted
	ReloadsOK, ReloadsFailed int
	Respawns                 int   // workers started after a crash or an outside stop
	Upgrades, UpgradesFailed int   // upgrades of the parent in place
	Relayed, Dropped         int64 // messages relayed between workers, and dropped
	Slots                    []SlotStats
	Procs                    []ProcStats // every live worker, by id then generation
}

// SlotStats is one slot: its counters cover every worker it has had.
type SlotStats struct {
	ID             int
	PID            int // its serving worker's; 0 when it has none
	Eligible       bool
	Restarts       int
	Queue, Backlog int           // its main socket's accept queue and its limit; -1 when unknown
	Requests       int64         // served by its workers, as last counted
	CPU            time.Duration // user and system time of its workers
}

// ProcStats is one live worker.
type ProcStats struct {
	Info
	RSS      int64         // resident memory, bytes; -1 when unknown
	CPU      time.Duration // user and system time
	Requests int64         // requests (or connections) served; -1 when it did not say
	RTT      time.Duration // the last heartbeat's round trip; 0 without heartbeats
}

// counters are the cluster's, for Stats. The loop owns the ints.
type counters struct {
	reloadsOK, reloadsFailed int
	respawns                 int
	upgrades, upgradesFailed int
	relayed, dropped         atomic.Int64 // counted by the workers' reader goroutines
}

// countTimeout bounds how long Stats waits for a worker to say what it has
// served: one that is stopped or busy is reported as unknown.
const countTimeout = 250 * time.Millisecond

// Stats takes a snapshot: the loop's counters and each slot's queue, then
// each worker's count (asked over its channel) and its memory and CPU time
// (from /proc), read off the loop.
func (s *Supervisor) Stats(ctx context.Context) (Stats, error) {
	var st Stats
	var ws []*worker
	err := s.do(func() error {
		st = Stats{Gen: s.gen, Wanted: s.wanted(), ReloadsOK: s.counts.reloadsOK, ReloadsFailed: s.counts.reloadsFailed,
			Respawns: s.counts.respawns, Upgrades: s.counts.upgrades, UpgradesFailed: s.counts.upgradesFailed, Relayed: s.counts.relayed.Load(), Dropped: s.counts.dropped.Load()}
		for w := range s.workers {
			ws = append(ws, w)
		}
		return nil
	})
	if err != nil {
		return Stats{}, err
	}
	procs := make([]ProcStats, len(ws))
	ctx, cancel := context.WithTimeout(ctx, countTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for i, w := range ws {
		wg.Go(func() { procs[i] = s.procStats(ctx, w) })
	}
	wg.Wait()
	err = s.do(func() error {
		for i, w := range ws {
			procs[i].Info = w.info()
		}
		st.Slots = s.slotStats()
		return nil
	})
	if err != nil {
		return Stats{}, err
	}
	slices.SortFunc(procs, func(a, b ProcStats) int {
		if a.ID != b.ID {
			return a.ID - b.ID
		}
		return a.Gen - b.Gen
	})
	st.Procs = procs
	return st, nil
}

// procStats reads what one worker's process says of itself.
func (s *Supervisor) procStats(ctx context.Context, w *worker) ProcStats {
	ps := ProcStats{RSS: -1, Requests: -1, RTT: time.Duration(w.rtt.Load())}
	if rss, err := s.cfg.MemoryOf(w.pid); err == nil {
		ps.RSS = rss
	}
	if cpu, err := cpuTime(w.pid); err == nil {
		ps.CPU = cpu
		w.cpu.Store(int64(cpu))
	}
	if w.ch == nil {
		return ps
	}
	data, err := s.reqs.Do(ctx, w, func(id uint64) error {
		return w.ch.SendControl(wire.Frame{Type: wire.TypeCount, ID: id, To: uint32(w.id)})
	})
	if err == nil && len(data) == 8 {
		ps.Requests = int64(binary.LittleEndian.Uint64(data))
		w.requests.Store(ps.Requests)
	} else if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		s.log.Debug("worker did not say what it served", w.attrs("err", err)...)
	}
	return ps
}

// slotStats sums each slot's counters: its exited workers' (folded in at
// their exit) and its live workers' as last read. A counter never goes
// back, even when a worker's last count is older than what a snapshot saw.
func (s *Supervisor) slotStats() []SlotStats {
	live := make(map[*slot][2]int64)
	for w := range s.workers {
		v := live[w.slot]
		v[0] += max(w.requests.Load(), 0)
		v[1] += w.cpu.Load()
		live[w.slot] = v
	}
	var out []SlotStats
	for _, sl := range s.slots {
		if sl.removed {
			continue
		}
		v := live[sl]
		sl.seenRequests = max(sl.seenRequests, sl.requests+v[0])
		sl.seenCPU = max(sl.seenCPU, sl.cpu+time.Duration(v[1]))
		ss := SlotStats{ID: sl.id, Restarts: sl.restarts, Queue: -1, Backlog: -1,
			Requests: sl.seenRequests, CPU: sl.seenCPU}
		if w := sl.cur; w != nil {
			ss.PID, ss.Eligible = w.pid, w.state == Listening && sl.pickable
		}
		if ep := s.eps[0]; ep.stream() && ep.shared < 0 && sl.fds[0] >= 0 {
			if q, b, err := listenQueue(sl.fds[0]); err == nil {
				ss.Queue, ss.Backlog = q, b
			}
		}
		out = append(out, ss)
	}
	return out
}
