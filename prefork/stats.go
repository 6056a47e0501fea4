package prefork

import (
	"context"
	"os"
	"time"
)

// Stats is a snapshot of a running cluster, taken by the parent. Every
// counter covers the cluster's life; a slot's cover every worker the slot
// has had, so they never go back when a worker is replaced.
type Stats struct {
	PID           int // the parent's process id
	Generation    int // the serving generation
	Workers       int // the slots wanted (Config.Workers, as scaled)
	ReloadsOK     int // reloads that served
	ReloadsFailed int // reloads that failed (the old generation served on)
	Respawns      int // workers started after one died or was stopped from outside
	// Upgrades counts upgrades of the parent in place (Upgrade, SIGUSR2),
	// carried across them; UpgradesFailed those refused or rolled back.
	Upgrades, UpgradesFailed int

	MessagesRelayed int64 // worker-to-worker messages the parent relayed
	MessagesDropped int64 // relayed messages that could not be delivered

	Slots     []SlotStats    // by id
	Processes []ProcessStats // every live worker (serving, starting, draining), by id then generation
}

// SlotStats is one slot.
type SlotStats struct {
	ID       int
	PID      int  // its serving worker's process id; 0 while it has none
	Eligible bool // the kernel may give its socket a new connection, and its worker accepts
	Restarts int  // workers started in it after one died
	// Queue is the number of connections waiting in the accept queue of
	// its socket (the main address's), Backlog that queue's limit; both
	// are -1 where they are not known (inherit mode, UDP, not Linux).
	Queue, Backlog int
	// Requests: requests served by its workers (Run, RunServer,
	// ServeHTTP), or connections accepted (Serve), as each worker said at
	// the last Stats before it exited.
	Requests int64
	CPU      time.Duration // user and system time of its workers, the exited ones included
}

// ProcessStats is one live worker process.
type ProcessStats struct {
	WorkerInfo
	RSS      int64         // resident memory in bytes; -1 when not known
	CPU      time.Duration // user and system time (Linux; 0 elsewhere)
	Requests int64         // as SlotStats.Requests, for this process; -1 when it did not answer within 250 ms
	// HeartbeatRTT is the last heartbeat's round trip (0 without
	// Config.HeartbeatTimeout).
	HeartbeatRTT time.Duration
}

// Stats returns a snapshot of the running cluster. It asks each worker
// over its channel what it has served (waiting at most 250 ms, or until
// ctx ends) and reads memory and CPU time from /proc. It fails with
// ErrNotParent in a worker and ErrNotRunning when the cluster does not run.
func (c *Cluster) Stats(ctx context.Context) (Stats, error) {
	s, err := c.parent()
	if err != nil {
		return Stats{}, err
	}
	in, err := s.Stats(ctx)
	if err != nil {
		return Stats{}, err
	}
	st := Stats{PID: os.Getpid(), Generation: in.Gen, Workers: in.Wanted, ReloadsOK: in.ReloadsOK,
		ReloadsFailed: in.ReloadsFailed, Respawns: in.Respawns, Upgrades: in.Upgrades, UpgradesFailed: in.UpgradesFailed, MessagesRelayed: in.Relayed, MessagesDropped: in.Dropped}
	for _, sl := range in.Slots {
		st.Slots = append(st.Slots, SlotStats{ID: sl.ID, PID: sl.PID, Eligible: sl.Eligible, Restarts: sl.Restarts,
			Queue: sl.Queue, Backlog: sl.Backlog, Requests: sl.Requests, CPU: sl.CPU})
	}
	for _, p := range in.Procs {
		st.Processes = append(st.Processes, ProcessStats{WorkerInfo: infoOf(p.Info), RSS: p.RSS, CPU: p.CPU,
			Requests: p.Requests, HeartbeatRTT: p.RTT})
	}
	return st, nil
}
