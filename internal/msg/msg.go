// Package msg is the messaging both sides of a cluster share: the message
// type handed to user callbacks, requests that wait for their reply, the
// goroutines that answer requests, and how frames are built and errors
// named. The parent routes and relays (internal/supervisor); a worker
// sends to its parent (internal/worker); both use this.
package msg

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"syscall"

	"github.com/forkline/forkline/internal/sockfd"
	"github.com/forkline/forkline/internal/wire"
)

// Addresses besides a worker's id (package prefork documents them).
const (
	Parent = 0
	All    = -1
)

// Errors of messaging; package prefork exports them.
var (
	ErrNoWorker  = errors.New("prefork: no such worker")
	ErrQueueFull = errors.New("prefork: message queue full")
	ErrTooLarge  = errors.New("prefork: message too large")
)

// Message is a message from another process of the cluster (package
// prefork's Message has the same fields, and converts).
type Message struct {
	From  int
	Data  []byte
	Files []*os.File
}

// AddrName names an address in errors and logs: "parent", "all workers",
// "worker 3".
func AddrName(id int) string {
	switch id {
	case Parent:
		return "parent"
	case All:
		return "all workers"
	}
	return "worker " + strconv.Itoa(id)
}

// FromFrame turns a received user frame into a Message; its descriptors
// become the receiver's files. A Message is passed by value: with the
// payload Recv allocates, a message costs one allocation to receive.
func FromFrame(f *wire.Frame) Message {
	m := Message{From: int(f.From), Data: f.Payload}
	for _, fd := range f.FDs {
		m.Files = append(m.Files, os.NewFile(uintptr(fd), "forkline-message-file"))
	}
	return m
}

// NewFrame builds the frame of a user message or request, with duplicates
// of files' descriptors in f.FDs: the caller closes them (wire.CloseFDs)
// once the frame is queued, since the queue holds its own duplicates.
// Without files it allocates nothing. max is the channel's send limit.
func NewFrame(typ wire.Type, from, to int, data []byte, files []syscall.Conn, max int) (f wire.Frame, err error) {
	if len(data) > max {
		return f, fmt.Errorf("%w: %d bytes, the limit is %d", ErrTooLarge, len(data), max)
	}
	if len(files) > wire.MaxFDs {
		return f, fmt.Errorf("%w: %d files, the limit is %d", ErrTooLarge, len(files), wire.MaxFDs)
	}
	f = wire.Frame{Type: typ, From: uint32(from), To: uint32(int32(to)), Payload: data}
	for _, c := range files {
		fd, err := sockfd.DupFD(c)
		if err != nil {
			wire.CloseFDs(f.FDs)
			return wire.Frame{}, fmt.Errorf("prefork: file to send: %w", err)
		}
		f.FDs = append(f.FDs, fd)
	}
	return f, nil
}

// SendErr turns a wire error on the way to `to` into the package's.
func SendErr(to int, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, wire.ErrQueueFull):
		return fmt.Errorf("%w: %s", ErrQueueFull, AddrName(to))
	case errors.Is(err, wire.ErrTooLarge):
		return fmt.Errorf("%w: %v", ErrTooLarge, err)
	case errors.Is(err, wire.ErrClosed):
		return fmt.Errorf("%w: %s", ErrNoWorker, AddrName(to))
	}
	return err
}

// EncodeRoster and DecodeRoster carry the live worker ids to every worker,
// so that a worker's Send to a dead id fails at once.
func EncodeRoster(ids []int) []byte {
	b := make([]byte, 0, 4*len(ids))
	for _, id := range ids {
		b = binary.LittleEndian.AppendUint32(b, uint32(id))
	}
	return b
}

// DecodeRoster is EncodeRoster's inverse.
func DecodeRoster(b []byte) map[int]bool {
	ids := make(map[int]bool, len(b)/4)
	for ; len(b) >= 4; b = b[4:] {
		ids[int(binary.LittleEndian.Uint32(b))] = true
	}
	return ids
}
