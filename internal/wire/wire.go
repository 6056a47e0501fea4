// Package wire implements the framed channel between a forkline parent and
// its workers: a unix stream socketpair carrying fixed-header frames, with
// descriptors passed alongside as SCM_RIGHTS.
//
// # Frames
//
// Every frame is a [HeaderLen]-byte header followed by the payload. The header
// is, in little-endian order:
//
//	magic(1)=0xF1  version(1)  type(1)  nfds(1)  from(4)  to(4)  id(8)  length(4)
//
// nfds is the number of descriptors that travel with the frame. The sender
// starts every frame that carries descriptors with its own sendmsg call, so
// the kernel delivers the descriptors no later than the first byte of that
// frame; the receiver keeps the descriptors in arrival order and hands the
// first nfds of them to the frame whose header names them.
//
// # Sending
//
// [Conn.Send] never blocks on the socket: it copies the frame into a bounded
// queue, and one writer goroutine per [Conn] writes everything queued with as
// few system calls as it can. Batching is what makes small frames cheap, and
// a slow peer costs memory only up to [Options.QueueBytes], after which Send
// reports [ErrQueueFull] and [Conn.SendWait] waits.
package wire

import (
	"errors"
	"strconv"
)

// Protocol constants.
const (
	Version           = 1       // protocol version carried in every header
	HeaderLen         = 24      // bytes in a frame header
	DefaultMaxPayload = 1 << 20 // default for Options.MaxPayload
	DefaultQueueBytes = 4 << 20 // default for Options.QueueBytes
	MaxFDs            = 8       // descriptors per frame

	Parent    uint32 = 0          // address of the parent
	Broadcast uint32 = ^uint32(0) // "every worker"
)

// DrainLast, as a drain request's payload, says that the parent no longer
// holds the worker's socket: the worker's copy is the last, and closing it
// resets what is queued unless it takes the queue first.
var DrainLast = []byte{1}

// magic is the first byte of every frame; a stream that does not start with
// it is not ours (or we lost framing).
const magic = 0xF1

// Type is the kind of a frame.
type Type uint8

// Frame types. Types below TypeUser are reserved for forkline's own control
// traffic. Type 0 is never valid, so a zero Frame cannot be sent by accident.
// Control types above LastControl belong to later versions: a reload runs a
// new binary's workers under the parent started from the old one, so a
// receiver ignores a control type it does not know (see Type.Known).
const (
	TypeHello    Type = 1  // worker→parent: channel up (Node's "online"); payload = Hello
	TypeReady    Type = 2  // worker→parent: serving; payload = listen address text
	TypeFailed   Type = 3  // worker→parent: could not serve; payload = error text
	TypeDrain    Type = 4  // parent→worker: stop accepting, finish in-flight work, exit; payload = DrainLast or none
	TypeListener Type = 5  // carries a listening socket in FDs[0] (either direction)
	TypePing     Type = 6  // liveness probe; answered by TypePong with the same ID
	TypePong     Type = 7  // answer to TypePing
	TypeRoster   Type = 8  // parent→worker: the live worker ids (uint32 LE each)
	TypeRecycle  Type = 9  // worker→parent: replace me (MaxRequests reached)
	TypeStopping Type = 10 // worker→parent: asked to stop by someone else (a signal); payload = why
	TypeWelcome  Type = 11 // parent→worker, the first frame: payload = Welcome, FDs = its sockets
	TypeCount    Type = 12 // parent→worker: what have you served? Answered by TypeReply, payload = uint64 LE
	LastControl       = TypeCount
	TypeUser     Type = 64 // first user type: user message
	TypeRequest  Type = 65 // user request; answered by TypeReply with the same ID
	TypeReply    Type = 66 // answer to TypeRequest
	TypeReplyErr Type = 67 // reply carrying an error text
)

// Reserved reports whether t belongs to forkline's control traffic.
func (t Type) Reserved() bool { return t < TypeUser }

// Known reports whether t is a type this version defines: a user type, or a
// control type up to LastControl.
func (t Type) Known() bool { return t != 0 && (t <= LastControl || t >= TypeUser) }

var typeNames = [...]string{
	TypeHello:    "hello",
	TypeReady:    "ready",
	TypeFailed:   "failed",
	TypeDrain:    "drain",
	TypeListener: "listener",
	TypePing:     "ping",
	TypePong:     "pong",
	TypeRoster:   "roster",
	TypeRecycle:  "recycle",
	TypeStopping: "stopping",
	TypeWelcome:  "welcome",
	TypeCount:    "count",
	TypeUser:     "user",
	TypeRequest:  "request",
	TypeReply:    "reply",
	TypeReplyErr: "reply-error",
}

// String returns the name of t, or "reserved(N)" / "user(N)" for types
// without a name.
func (t Type) String() string {
	if int(t) < len(typeNames) && typeNames[t] != "" {
		return typeNames[t]
	}
	if t.Reserved() {
		return "reserved(" + strconv.Itoa(int(t)) + ")"
	}
	return "user(" + strconv.Itoa(int(t)) + ")"
}

// Frame is one message on a [Conn].
type Frame struct {
	Type    Type
	From    uint32 // sender: Parent or a worker id
	To      uint32 // recipient: Parent, a worker id, or Broadcast
	ID      uint64 // request/reply correlation, ping/pong
	Payload []byte // nil when empty on receive
	FDs     []int  // descriptors carried with the frame (SCM_RIGHTS), at most MaxFDs
}

// Options configures a [Conn]. The zero value is ready to use.
type Options struct {
	// MaxPayload bounds the payload of one frame; 0 means DefaultMaxPayload.
	// Larger frames are refused on send and are a protocol error on receive.
	MaxPayload int
	// QueueBytes bounds the outgoing queue (headers and payloads not yet
	// written to the socket); 0 means DefaultQueueBytes. A frame larger
	// than the bound is accepted only into an empty queue.
	QueueBytes int
}

func (o Options) normalize() Options {
	if o.MaxPayload <= 0 {
		o.MaxPayload = DefaultMaxPayload
	}
	// The length field is 32 bits wide.
	if uint64(o.MaxPayload) > uint64(^uint32(0)) {
		o.MaxPayload = int(^uint32(0))
	}
	if o.QueueBytes <= 0 {
		o.QueueBytes = DefaultQueueBytes
	}
	return o
}

// Errors returned by a [Conn]. Returned errors wrap them with detail; test
// with [errors.Is].
var (
	// ErrTooLarge: a payload above Options.MaxPayload or more than MaxFDs
	// descriptors, on send or receive.
	ErrTooLarge = errors.New("wire: frame too large")
	// ErrMalformed: the peer sent bytes that are not a valid frame, or
	// Send was given an invalid frame. The Conn is unusable after a
	// receive error.
	ErrMalformed = errors.New("wire: malformed frame")
	// ErrQueueFull: Send found no room in the outgoing queue.
	ErrQueueFull = errors.New("wire: send queue full")
	// ErrClosed: the Conn was closed, or a write failed (the cause is
	// wrapped too).
	ErrClosed = errors.New("wire: connection closed")
	// ErrDetached: Detach handed the Conn's socket over (unix).
	ErrDetached = errors.New("wire: connection detached")
)

// Detached is a Conn's socket handed over whole, at a frame boundary: what
// was received but not yet returned by Recv comes with it, to be handed to
// the Conn that takes it over (NewConnPending), in another process if need
// be.
type Detached struct {
	FD      int    // a duplicate of the socket, close-on-exec
	Pending []byte // bytes received and not yet decoded: a partial frame, or several
	FDs     []int  // descriptors received with them, in order
}
