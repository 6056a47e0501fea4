package supervisor

import (
	"fmt"

	"github.com/forkline/forkline/internal/wire"
	"strconv"
	"sync/atomic"
	"time"
)

// State is where a worker is in its life. Every transition is a call on
// the supervisor goroutine, named at each constant.
type State int

const (
	// Starting: the process was started (spawn); its channel is not up yet.
	Starting State = iota
	// Online: it said hello (onHello); its server does not accept yet.
	Online
	// Listening: its server accepts (onReady): it serves, or, as a
	// handover's successor, waits to take over.
	Listening
	// Draining: it was asked to go (drain, a kill): it finishes and exits.
	Draining
	// Disconnected: its channel has closed; the process is being reaped.
	// Only events carry it; the supervisor learns both at once (onExit).
	Disconnected
	// Dead: it exited and was reaped (onExit).
	Dead
)

var stateNames = [...]string{"starting", "online", "listening", "draining", "disconnected", "dead"}

// String returns the state in lower case: "starting", "online",
// "listening", "draining", "disconnected" or "dead".
func (s State) String() string {
	if s >= 0 && int(s) < len(stateNames) {
		return stateNames[s]
	}
	return "State(" + strconv.Itoa(int(s)) + ")"
}

// Info describes a worker at one moment.
type Info struct {
	ID, PID, Gen int
	State        State
	Started      time.Time
	Restarts     int
	Eligible     bool // the kernel may give its slot a new connection, and it accepts
}

// ending says why a worker leaves. It is recorded once, by whoever learns
// it first (the parent asking it to go, the worker reporting a failure or a
// signal, a verdict of the parent's), and read when the worker exits: a
// worker that exits with none recorded crashed.
type ending struct {
	kind   endKind
	reason string // why, for the log and the Exit event
	err    error  // the cause, unless the parent asked
}

type endKind int

const (
	endAsked   endKind = iota + 1 // the parent asked it to go: what follows is arranged
	endStopped                    // someone else's SIGTERM: replaced, not a failure
	endFailed                     // it failed, or the parent gave up on it
)

// worker is the parent's record of one worker process. The supervisor
// goroutine owns every field but those marked otherwise.
type worker struct {
	slot     *slot
	id, gen  int
	pid      int
	proc     Process
	ch       Channel
	beat     Beat
	started  time.Time
	restarts int

	state   State
	readyAt time.Time
	timer   *time.Timer // the ready deadline, then the stop deadline
	end     *ending
	ho      *handover // the handover it is a successor of, if any

	// Heartbeats (health.go): the pings not answered yet, oldest first,
	// and what the beat goroutine last heard.
	unanswered []ping
	pinged     uint64        // the last ping's sequence number
	pong       atomic.Uint64 // the last ping answered; set by the beat goroutine
	rtt        atomic.Int64  // its round trip in ns; set by the beat goroutine
	pingSent   atomic.Int64  // when the last ping went out, unix ns

	// relayStuck: a relay to it timed out waiting for room (see relaySend).
	relayStuck atomic.Bool
	relays     relayed // requests relayed to it that wait for its answer

	// An upgrade: its channel detached (with what it had received), and
	// its reader ended on it.
	detached   *wire.Detached
	readerDone bool

	// Stats: what it served as it last said, and its CPU time as last read.
	requests atomic.Int64
	cpu      atomic.Int64
}

// setEnd records why w leaves, unless that is known already.
func (w *worker) setEnd(e ending) {
	if w.end == nil {
		w.end = &e
	}
}

func (w *worker) asked() bool { return w.end != nil && w.end.kind == endAsked }

func (w *worker) attrs(more ...any) []any {
	return append([]any{"worker", w.id, "pid", w.pid, "gen", w.gen}, more...)
}

func (w *worker) info() Info {
	return Info{ID: w.id, PID: w.pid, Gen: w.gen, State: w.state, Started: w.started, Restarts: w.restarts,
		Eligible: w.state == Listening && w.slot.pickable}
}

// WorkerError is the failure of one worker: the error it reported, or how
// it exited when it could not say (package prefork exports it).
type WorkerError struct {
	ID, Gen, PID int
	Err          error
}

func (e *WorkerError) Error() string {
	if e.PID == 0 { // it could not even be started
		return fmt.Sprintf("prefork: worker %d (gen %d): %v", e.ID, e.Gen, e.Err)
	}
	return fmt.Sprintf("prefork: worker %d (pid %d, gen %d): %v", e.ID, e.PID, e.Gen, e.Err)
}

func (e *WorkerError) Unwrap() error { return e.Err }
