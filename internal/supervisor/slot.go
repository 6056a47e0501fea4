package supervisor

import "time"

// slot is one place for a worker: its id, the parent's copies of its
// sockets (one per address) and the worker serving in it. The parent keeps
// every slot's sockets open for as long as the slot exists, so that
// connections (and datagrams) queued on them outlive the worker serving it
// (a crash, a reload); it never accepts from them.
type slot struct {
	id       int
	fds      []int   // the parent's copy of its socket for each endpoint; -1 once closed
	closed   bool    // its own sockets are closed (scale-down, stop)
	cur      *worker // the serving worker, or the one starting to serve
	failures int     // consecutive failed starts or crashes (the backoff)
	restarts int     // workers started in this slot after crashes
	respawn  *time.Timer
	parked   bool // Disconnect: empty until the next reload or SetWorkers
	removed  bool // scaled away

	// Stats: what its exited workers served and spent (folded in at
	// their exit), and the highest totals reported.
	requests, seenRequests int64
	cpu, seenCPU           time.Duration

	recycleWhy string // why the recycle queued for it (Supervisor.recycles) was asked

	memDelay     time.Duration // MaxMemory: how long a fresh worker over the limit waits
	memNotBefore time.Time

	// Steering (steer.go).
	queue      int       // the main stream socket's accept queue at the last check
	queueSince time.Time // since when it has held connections without getting shorter
	stalled    bool      // out of the eligible list: its queue does not move
	pickable   bool      // the kernel may give it a new connection
	idleSince  time.Time // without steering: since when it has had no worker
	unlistened bool      // without steering: its sockets stopped listening (no worker)
}

func (sl *slot) stopRespawn() {
	if sl.respawn != nil {
		sl.respawn.Stop()
		sl.respawn = nil
	}
}
