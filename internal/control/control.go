// Package control implements the parent's control socket: a unix stream
// socket on which the cluster's owner (its user, or root) asks for its
// status, reloads, scales, signals a worker, stops it, or follows its
// events. The cluster implements [Handler]; [Serve] answers the socket that
// [Listen] creates; [Client] is the other end, for the forkline command.
//
// # Protocol
//
// Newline-delimited JSON, one [Request] a line, several per connection,
// answered in order, one JSON line each: {"ok":true, ...} or
// {"ok":false,"error":"..."}.
//
//	{"cmd":"status"}                        {"ok":true,"status":{...Status}}
//	{"cmd":"reload"}                        {"ok":true,"generation":4}, when it serves
//	{"cmd":"scale","n":"4"}                 {"ok":true,"workers":4,"was":2}
//	{"cmd":"scale","n":"+1"} ("-1", "+k")   relative to Status.Workers
//	{"cmd":"kill","id":2,"signal":"TERM"}   {"ok":true}; signal TERM, SIGTERM, 15; default TERM
//	{"cmd":"stop"}                          {"ok":true}, then events until it stopped, then EOF
//	{"cmd":"events"}                        {"ok":true}, then one Event a line
//	{"cmd":"upgrade"}                       the handler's answer (reserved)
//
// A line that is not one JSON object of a known command with valid
// arguments, or that has a field its command does not take, gets an error
// line and calls nothing that changes the cluster. A line is at most 64 KiB: a longer one gets an
// error line and is skipped up to its newline. "events" and "stop" are the
// last command of their connection: the server streams events until the
// client closes, the cluster stops or Serve ends, then closes it. A
// connection idle for a minute is closed.
//
// # Who may connect
//
// Listen creates the socket file with mode 0600, never wider. On Linux the
// mode is set on the socket before bind (fchmod), so that the file is
// created with it (less the umask). Elsewhere, where fchmod on a socket
// does not do that, chmod sets it after bind and before listen, while a
// connect fails with ECONNREFUSED whatever the mode (and the credentials
// check would refuse one that slipped in). A umask around bind was
// rejected: it is the process's, and other threads create files. So was
// binding in a private directory and renaming the file into place: the
// socket would keep the private name as its address, and the listener
// would unlink the wrong path at Close.
//
// Every accepted connection is then checked by its peer's credentials
// (SO_PEERCRED on Linux, LOCAL_PEERCRED on macOS and FreeBSD): only the
// parent's effective uid and root are answered; anyone else gets an error
// line, and a warning naming its uid and pid is logged. On systems whose
// peer credentials this package cannot read (OpenBSD, NetBSD, Solaris,
// Windows...), Listen fails with an error satisfying errors.Is(err,
// errors.ErrUnsupported): the mode alone is not trusted.
package control

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
	"time"
)

// Handler is the cluster, as the control socket drives it. Serve calls its
// methods from one goroutine per connection, concurrently: they must be
// safe for concurrent use. The ctx they get ends when the Serve that calls
// them ends.
type Handler interface {
	// Status returns the cluster's state now.
	Status(ctx context.Context) (Status, error)
	// Reload reloads the cluster and returns when the new generation
	// serves (nil) or has failed (its cause), or with ctx.Err().
	Reload(ctx context.Context) error
	// Scale sets the number of workers wanted, n >= 1 (Serve resolves a
	// relative "+1" from Status). It may return before the workers
	// started.
	Scale(n int) error
	// Kill sends sig to the serving worker of slot id.
	Kill(id int, sig syscall.Signal) error
	// Stop begins a graceful stop and returns once it has begun, without
	// waiting for the workers. The client learns the end from the events
	// that follow and from the EOF that ends them: the channels of Events
	// must be closed, and Serve's ctx cancelled, once the cluster has
	// stopped (its last worker exited).
	Stop(ctx context.Context) error
	// Events subscribes to the cluster's events, from now on. The channel
	// is closed when ctx ends or when the cluster has stopped. A slow
	// subscriber must not hold the cluster up: the handler drops events
	// for it (or closes its channel) rather than block.
	Events(ctx context.Context) (<-chan Event, error)
	// Upgrade is reserved for a later upgrade of the parent itself; until
	// then it returns an error saying that it is not supported.
	Upgrade(ctx context.Context) error
}

// Request is one line from a client. Only the fields of its command may be
// set.
type Request struct {
	// Cmd is "status", "reload", "scale", "kill", "stop", "events" or
	// "upgrade".
	Cmd string `json:"cmd"`
	// N is scale's count: "4", or "+1", "-2" relative to the workers
	// wanted now.
	N string `json:"n,omitempty"`
	// ID is kill's worker slot, 1 or more.
	ID int `json:"id,omitempty"`
	// Signal is kill's signal: a name, with or without "SIG", in any case,
	// or a number. Empty means TERM.
	Signal string `json:"signal,omitempty"`
}

// Status is the cluster's state, the answer to "status".
type Status struct {
	PID             int       `json:"pid"`        // the parent's process id
	Started         time.Time `json:"started"`    // when the parent started
	Generation      int       `json:"generation"` // the generation that serves
	Workers         int       `json:"workers"`    // the workers wanted (the slots)
	ReloadsOK       int       `json:"reloads_ok"`
	ReloadsFailed   int       `json:"reloads_failed"`
	Respawns        int       `json:"respawns"`        // workers started to replace one that died
	Upgrades        int       `json:"upgrades"`        // upgrades of the parent in place
	UpgradesFailed  int       `json:"upgrades_failed"` // refused or rolled back
	MessagesRelayed int64     `json:"messages_relayed"`
	MessagesDropped int64     `json:"messages_dropped"`
	// Slots are the live workers by ID, then Gen: during a reload a slot
	// has two. A slot emptied by Disconnect may be shown as one with PID 0
	// and State "empty".
	Slots []Slot `json:"slots"`
}

// Slot is one live worker in Status. Its measures (RSS, CPU, Queue,
// Backlog, Requests, RTT) are -1 when they are not known: not measured on
// this platform, heartbeats off, a worker that does not count.
type Slot struct {
	ID       int       `json:"id"`    // the slot, 1..Workers
	PID      int       `json:"pid"`   // the worker's process id
	Gen      int       `json:"gen"`   // its generation
	State    string    `json:"state"` // "starting", "online", "listening", "draining"...
	Eligible bool      `json:"eligible"`
	Started  time.Time `json:"started"`
	Restarts int       `json:"restarts"`  // workers its slot had before it after crashes
	RSS      int64     `json:"rss_bytes"` // resident memory, bytes
	CPU      float64   `json:"cpu_seconds"`
	Queue    int       `json:"queue"`   // connections waiting in its slot's accept queue
	Backlog  int       `json:"backlog"` // that queue's limit
	Requests int64     `json:"requests"`
	RTT      float64   `json:"rtt_ms"` // the last heartbeat's round trip, milliseconds
}

// Event is one of the cluster's events, a line of the "events" stream.
// Type is a worker's "fork", "online", "listening", "disconnect", "exit"
// or "eligible", or the cluster's "ready", "reloading", "reloaded" or
// "stopping".
type Event struct {
	Time     time.Time `json:"time"`
	Type     string    `json:"type"`
	ID       int       `json:"id,omitempty"`        // the worker's slot
	PID      int       `json:"pid,omitempty"`       // the worker's process id
	Gen      int       `json:"gen,omitempty"`       // the worker's, or the cluster's for its events
	State    string    `json:"state,omitempty"`     // the worker's state after the event
	Eligible bool      `json:"eligible,omitempty"`  // eligible: the kernel may give its slot new connections
	Addr     string    `json:"addr,omitempty"`      // listening, ready
	ExitCode int       `json:"exit_code,omitempty"` // exit: -1 if a signal ended it
	Signal   string    `json:"signal,omitempty"`    // exit: the signal that ended it
	Asked    bool      `json:"asked,omitempty"`     // exit: the parent had asked it to stop
	Reason   string    `json:"reason,omitempty"`    // exit: why it was asked, or died
	Err      string    `json:"error,omitempty"`     // exit: its failure; reloaded: the reload's
}

// Listen creates the control socket at path, mode 0600, and listens on it.
// A socket file that nothing listens on (left by a parent that died) is
// replaced; one that is served is refused, as is a file that is not a
// socket. Closing the listener (Serve does) removes the file. See the
// package documentation for how the mode is set and where Listen is not
// supported.
func Listen(path string) (*net.UnixListener, error) {
	return listen(path, 0o600)
}

// errNoPeerCred is Listen's error where peer credentials cannot be read.
var errNoPeerCred = fmt.Errorf("control: reading a unix socket's peer credentials is not supported here: %w", errors.ErrUnsupported)
