package wire

import (
	"encoding/json"
	"fmt"
)

// How a worker starts: the parent executes its own binary again with the
// environment variables below and two descriptors, then writes a Welcome
// frame on the channel before the worker reads anything. Everything else a
// worker needs (its sockets, the agreed limits) comes with that frame, so
// that the contract between the two sides is this file and the frame types.
const (
	EnvWorker     = "FORKLINE_WORKER"     // slot id, 1..N
	EnvGeneration = "FORKLINE_GENERATION" // 1, then +1 per reload
	EnvParent     = "FORKLINE_PARENT"     // the parent's pid
	// EnvUnset lists, comma-separated, variables the parent set for the
	// worker's runtime only (GOMAXPROCS): the worker removes them, with
	// the FORKLINE_ ones, before its own code runs, so that a program the
	// worker starts does not inherit them.
	EnvUnset = "FORKLINE_UNSET"

	FDChannel = 3 // the worker's end of the channel (a unix stream socket)
	FDCrash   = 4 // write end of a pipe for the worker's crash output
)

// EnvNames are the variables above: a parent removes them from what it
// hands its workers (a parent may itself have been started by a worker's
// code), and a worker from its own environment.
var EnvNames = []string{EnvWorker, EnvGeneration, EnvParent, EnvUnset}

// Welcome is the payload of TypeWelcome, the parent's first frame. Its FDs
// are the listeners, in order, then the heartbeat socket if Heartbeat.
type Welcome struct {
	// MaxPayload is the parent's message limit; the channel's limit both
	// ways is the lower of it and the worker's own.
	MaxPayload int `json:"max_payload"`
	// Listeners describe the listening sockets, one per address.
	Listeners []Listener `json:"listeners"`
	// Heartbeat says that the last descriptor is a datagram socket on
	// which the parent sends 8-byte pings for the worker to echo.
	Heartbeat bool `json:"heartbeat,omitempty"`
	// Kept says that the service manager keeps a copy of every socket
	// (its fd store): the worker's copy is never the last, and the queue
	// it leaves at the parent's death waits for the next parent.
	Kept bool `json:"kept,omitempty"`
}

// Listener describes one listening socket of a Welcome.
type Listener struct {
	Name    string `json:"name,omitempty"`
	Network string `json:"network"`
	Addr    string `json:"addr"`
}

// Hello is the payload of TypeHello: what the worker agreed to.
type Hello struct {
	MaxPayload int `json:"max_payload"`
}

// FDs returns how many descriptors a Welcome frame carries.
func (w Welcome) FDs() int {
	n := len(w.Listeners)
	if w.Heartbeat {
		n++
	}
	return n
}

// Encode returns the payload of w.
func (w Welcome) Encode() []byte {
	b, _ := json.Marshal(w)
	return b
}

// DecodeWelcome checks a welcome frame and returns its payload.
func DecodeWelcome(f Frame) (Welcome, error) {
	var w Welcome
	if f.Type != TypeWelcome {
		return w, fmt.Errorf("%w: first frame from the parent is %v, not welcome", ErrMalformed, f.Type)
	}
	if err := json.Unmarshal(f.Payload, &w); err != nil {
		return w, fmt.Errorf("%w: welcome: %w", ErrMalformed, err)
	}
	if w.FDs() != len(f.FDs) || len(w.Listeners) == 0 {
		return w, fmt.Errorf("%w: welcome names %d listeners (heartbeat %v) and carries %d descriptors", ErrMalformed, len(w.Listeners), w.Heartbeat, len(f.FDs))
	}
	return w, nil
}

// Encode returns the payload of h.
func (h Hello) Encode() []byte {
	b, _ := json.Marshal(h)
	return b
}

// DecodeHello returns the payload of a hello frame. An empty payload (a
// worker that agreed to nothing) is a zero Hello.
func DecodeHello(p []byte) (Hello, error) {
	var h Hello
	if len(p) == 0 {
		return h, nil
	}
	if err := json.Unmarshal(p, &h); err != nil {
		return h, fmt.Errorf("%w: hello: %w", ErrMalformed, err)
	}
	return h, nil
}
