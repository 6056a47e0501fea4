package supervisor

import (
	"context"
	"os"
	"time"

	"github.com/forkline/forkline/internal/wire"
)

// The process seam. The supervisor starts, signals and waits for workers
// through these interfaces only: in production they fork this executable
// again (exec_unix.go); in the tests they are goroutines that speak the
// protocol over in-memory channels, so that the supervisor's decisions
// (backoff, handovers, heartbeat verdicts) are tested in milliseconds, under
// testing/synctest, without forking.

// A Starter starts worker processes.
type Starter interface {
	// Start starts the worker spec describes. The worker's first frame on
	// its channel is spec.Welcome, with spec's sockets.
	Start(spec Spec) (Started, error)
	// Close releases the starter; it is called once, after the last
	// worker has been reaped.
	Close()
}

// Spec describes a worker to start.
type Spec struct {
	ID, Gen int
	// FDs are the slot's sockets, the parent's copies, one per
	// Welcome.Listeners entry; the starter hands the worker duplicates.
	FDs     []int
	Welcome wire.Welcome // Welcome.Heartbeat asks for a Beat
}

// Started is a worker process that runs.
type Started struct {
	Process Process
	Channel Channel
	Beat    Beat // nil unless the spec asked for heartbeats
}

// A Process is a started worker as the supervisor sees it.
type Process interface {
	Pid() int
	// Signal sends sig to the process; after Wait it does nothing.
	Signal(sig os.Signal) error
	// Wait waits for the process to exit and reaps it. The worker's watch
	// goroutine calls it once.
	Wait() Exit
}

// Exit is how a worker process ended.
type Exit struct {
	Code   int           // exit code, or -1 when a signal ended it
	Signal os.Signal     // the signal that ended it, or nil
	Status string        // as os/exec says it: "exit status 2", "signal: killed"
	Crash  string        // the first line of its crash output (a panic), if any
	CPU    time.Duration // its user and system time, when known
}

// Channel is the parent's end of a worker's channel: a *wire.Conn in
// production (conn in exec_unix.go). Frames go by value: a pointer handed
// to an interface method escapes, which would cost an allocation per
// message.
type Channel interface {
	Recv() (wire.Frame, error)
	Send(wire.Frame) error
	SendDirect(wire.Frame) error
	SendControl(wire.Frame) error
	SendWait(context.Context, wire.Frame) error
	SetSendLimit(int)
	SendLimit() int
	Close() error
}

// A Beat is the parent's end of a worker's heartbeat socket: liveness
// travels apart from the channel, so that it never waits behind messages
// or the callbacks that handle them, on either side.
type Beat interface {
	Ping(seq uint64) error // does not block
	Pong() (uint64, error) // waits for the next answer; fails once closed
	Close() error
}
