package prefork

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"
)

// Addresses for Send and Request besides a worker's id.
const (
	// Parent addresses the parent process.
	Parent = 0
	// All addresses every live worker: from the parent, all of them; from
	// a worker, all the others.
	All = -1
)

// Errors of messaging.
var (
	// ErrNoWorker is returned when a message is addressed to a worker that
	// is not alive (or never was).
	ErrNoWorker = errors.New("prefork: no such worker")
	// ErrQueueFull is returned when the recipient's queue is full: it is
	// not reading its channel as fast as messages arrive. The message was
	// not sent.
	ErrQueueFull = errors.New("prefork: message queue full")
	// ErrTooLarge is returned for a message over Config.MaxMessageSize.
	ErrTooLarge = errors.New("prefork: message too large")
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

// EventType is a kind of lifecycle event, named after Node's cluster events.
type EventType int

// Events, in the order each worker goes through them.
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
)

var eventNames = [...]string{EventFork: "fork", EventOnline: "online", EventListening: "listening", EventDisconnect: "disconnect", EventExit: "exit"}

// String returns the event's Node name: "fork", "online", "listening",
// "disconnect" or "exit".
func (t EventType) String() string {
	if t > 0 && int(t) < len(eventNames) {
		return eventNames[t]
	}
	return fmt.Sprintf("EventType(%d)", int(t))
}

// Event is a change in a worker's life, as the parent sees it.
type Event struct {
	Type   EventType
	Worker WorkerInfo
	// Addr is the address the worker serves on (EventListening).
	Addr string
	// For EventExit: the exit code (-1 if a signal ended the process), the
	// signal, whether the parent had asked the worker to stop (Node's
	// worker.exitedAfterDisconnect), and, when it had not, why it died.
	ExitCode int
	Signal   os.Signal
	Asked    bool
	Err      error
}

// WorkerInfo describes a worker at one moment.
type WorkerInfo struct {
	ID       int       // its slot, 1..Workers
	PID      int       // its process id
	Gen      int       // its generation
	State    string    // "starting", "online", "listening", "draining" or "dead"
	Started  time.Time // when it was started
	Restarts int       // how many workers its slot had before it after crashes
}
