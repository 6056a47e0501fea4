package prefork

import (
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/forkline/forkline/internal/msg"
	"github.com/forkline/forkline/internal/supervisor"
)

// Addresses for Send and Request besides a worker's id.
const (
	// Parent addresses the parent process.
	Parent = msg.Parent
	// All addresses every live worker: from the parent, all of them; from
	// a worker, all the others.
	All = msg.All
)

// Errors of messaging.
var (
	// ErrNoWorker is returned when a message is addressed to a worker that
	// is not alive (or never was), and by a Request whose recipient exited
	// before it answered.
	ErrNoWorker = msg.ErrNoWorker
	// ErrQueueFull is returned when the recipient's queue is full: it is
	// not reading its channel as fast as messages arrive. The message was
	// not sent.
	ErrQueueFull = msg.ErrQueueFull
	// ErrTooLarge is returned for a message over the channel's limit.
	ErrTooLarge = msg.ErrTooLarge
)

// Message is a message from another process of the cluster.
type Message struct {
	// From is the sender: Parent, or a worker's id. The parent stamps it
	// when it relays; a worker cannot pretend to be another.
	From int
	// Data is the payload. It belongs to the receiver.
	Data []byte
	// Files are the descriptors sent with the message (a connection, a
	// listener, a file). They belong to the receiver, who must close them;
	// net.FileConn and net.FileListener turn them into net types.
	Files []*os.File
}

// Decode unmarshals the message's JSON payload into v.
func (m Message) Decode(v any) error {
	return json.Unmarshal(m.Data, v)
}

// EventType is a kind of event: a worker's, named after Node's cluster
// events, or the cluster's own.
type EventType int

// Events, a worker's in the order each worker goes through them, then the
// cluster's.
const (
	// EventFork: the worker process was started (Node's 'fork').
	EventFork EventType = iota + 1
	// EventOnline: its channel to the parent is up; user code may not
	// serve yet (Node's 'online').
	EventOnline
	// EventListening: it is serving; Event.Addr is its address (Node's
	// 'listening'). Here "serving" means its server called Accept.
	EventListening
	// EventDisconnect: its channel closed (Node's 'disconnect').
	EventDisconnect
	// EventExit: the process exited and was reaped (Node's 'exit').
	EventExit
	// EventReady: the cluster is ready, every slot having served once;
	// Event.Addr is its address, Event.Gen its generation (1).
	EventReady
	// EventReloading: a reload began; Event.Gen is the new generation.
	EventReloading
	// EventReloaded: a reload ended; Event.Err says why it failed (the old
	// generation then serves on), nil when generation Event.Gen serves.
	EventReloaded
	// EventStopping: the cluster stops (a signal, Shutdown, Close, or a
	// failed start).
	EventStopping
	// EventEligible: whether the kernel may give a serving worker's slot
	// a new connection changed (Worker.Eligible): steering took a stalled
	// slot out, or put it back.
	EventEligible
	// EventUpgrading: an upgrade of the parent in place began (SIGUSR2,
	// Cluster.Upgrade, forkline upgrade).
	EventUpgrading
	// EventUpgraded: the parent was upgraded in place (this event comes
	// from the new one); Event.Err says why not: its preflight failed (the
	// old parent carries on), or the new parent gave the state back to the
	// old executable (a rollback: the event comes from the old one again).
	EventUpgraded
)

var eventNames = [...]string{EventFork: "fork", EventOnline: "online", EventListening: "listening",
	EventDisconnect: "disconnect", EventExit: "exit", EventReady: "ready", EventReloading: "reloading",
	EventReloaded: "reloaded", EventStopping: "stopping", EventEligible: "eligible",
	EventUpgrading: "upgrading", EventUpgraded: "upgraded"}

// String returns the event's name: Node's "fork", "online", "listening",
// "disconnect" and "exit", then "ready", "reloading", "reloaded",
// "stopping" and "eligible".
func (t EventType) String() string {
	if t > 0 && int(t) < len(eventNames) {
		return eventNames[t]
	}
	return fmt.Sprintf("EventType(%d)", int(t))
}

// Event is a change in a worker's life, as the parent sees it, or in the
// cluster's.
type Event struct {
	Type EventType
	// Worker is the worker concerned, in the state the event leaves it
	// in; zero for the cluster's events.
	Worker WorkerInfo
	// Addr is the address served (EventListening, EventReady).
	Addr string
	// For EventExit: the exit code (-1 if a signal ended the process), the
	// signal, whether the parent had asked the worker to stop (Node's
	// worker.exitedAfterDisconnect), why it was asked or stopped ("reload",
	// a recycle's reason such as "MaxRequests reached" or "RSS ... over
	// MaxMemory ...", "scale-down", "disconnect", "stop", "fast stop",
	// "stopped on SIGTERM", "missed heartbeat"), and, when it was not
	// asked, why it died.
	ExitCode int
	Signal   os.Signal
	Asked    bool
	Reason   string
	// Err: for EventExit the worker's failure (a *WorkerError), for
	// EventReloaded the reload's.
	Err error
	// Gen is the generation of the cluster's events.
	Gen int
}

func eventOf(ev supervisor.Event) Event {
	return Event{Type: EventType(ev.Type), Worker: infoOf(ev.Worker), Addr: ev.Addr, ExitCode: ev.ExitCode,
		Signal: ev.Signal, Asked: ev.Asked, Reason: ev.Reason, Err: publicErr(ev.Err), Gen: ev.Gen}
}

// WorkerState is where a worker is in its life, as WorkerInfo shows it.
type WorkerState int

// The states, in the order a worker goes through them.
const (
	// StateStarting: the process was started; its channel is not up yet.
	StateStarting WorkerState = iota
	// StateOnline: its channel is up; its server does not accept yet.
	StateOnline
	// StateListening: its server accepts. A reload's new worker is in it
	// from its first Accept, beside the old one, until the reload commits.
	StateListening
	// StateDraining: it was asked to go (a reload, a recycle, a scale-down,
	// Disconnect, a stop, a missed heartbeat): it stops accepting,
	// finishes what it has, and exits.
	StateDraining
	// StateDisconnected: its channel has closed and its process is being
	// reaped; EventDisconnect carries it.
	StateDisconnected
	// StateDead: it exited and was reaped; EventExit carries it.
	StateDead
)

// String returns the state in lower case: "starting", "online",
// "listening", "draining", "disconnected" or "dead".
func (s WorkerState) String() string { return supervisor.State(s).String() }

// MarshalText implements [encoding.TextMarshaler]: the state's String.
func (s WorkerState) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// WorkerInfo describes a worker at one moment.
type WorkerInfo struct {
	ID       int         // its slot, 1..Workers
	PID      int         // its process id
	Gen      int         // its generation
	State    WorkerState // where it is in its life
	Started  time.Time   // when it was started
	Restarts int         // how many workers its slot had before it after crashes
	// Eligible: it serves and the kernel may give its slot a new
	// connection (see Config.Steering).
	Eligible bool
}

func infoOf(in supervisor.Info) WorkerInfo {
	return WorkerInfo{ID: in.ID, PID: in.PID, Gen: in.Gen, State: WorkerState(in.State), Started: in.Started, Restarts: in.Restarts, Eligible: in.Eligible}
}
