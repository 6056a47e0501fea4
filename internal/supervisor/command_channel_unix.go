//go:build unix

package supervisor

// The channel and heartbeat of a command's worker (command_unix.go): made
// of what the process does, since it speaks no protocol of ours.

import (
	"context"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"

	"github.com/forkline/forkline/internal/wire"
)

// commandChannel is the channel of a worker that has none: frames the
// supervisor expects, made from what the process does, and the
// supervisor's frames turned into what such a program understands (a drain
// is SIGTERM).
type commandChannel struct {
	id     int
	addr   string
	frames chan wire.Frame
	done   chan struct{}
	once   sync.Once
	readyO sync.Once
	isRdy  chan struct{}
	limit  int
	proc   func(os.Signal) error
}

func newCommandChannel(spec Spec) *commandChannel {
	return &commandChannel{id: spec.ID, addr: spec.Welcome.Listeners[0].Addr, frames: make(chan wire.Frame, 16),
		done: make(chan struct{}), isRdy: make(chan struct{})}
}

func (c *commandChannel) push(f wire.Frame) {
	select {
	case c.frames <- f:
	case <-c.done:
	}
}

func (c *commandChannel) hello() { c.push(wire.Frame{Type: wire.TypeHello, From: uint32(c.id)}) }

func (c *commandChannel) ready() {
	c.readyO.Do(func() {
		close(c.isRdy)
		c.push(wire.Frame{Type: wire.TypeReady, From: uint32(c.id), Payload: []byte(c.addr)})
	})
}

func (c *commandChannel) wasReady() bool {
	select {
	case <-c.isRdy:
		return true
	default:
		return false
	}
}

func (c *commandChannel) Recv() (wire.Frame, error) {
	select {
	case f := <-c.frames:
		return f, nil
	case <-c.done:
		return wire.Frame{}, io.EOF
	}
}

// Send turns the supervisor's frames into what the program understands: a
// drain is SIGTERM; it answers no request (Stats asks what it served); it
// takes no message.
func (c *commandChannel) Send(f wire.Frame) error {
	wire.CloseFDs(f.FDs)
	switch f.Type {
	case wire.TypeDrain:
		if c.proc != nil {
			return c.proc(syscall.SIGTERM)
		}
	case wire.TypeCount, wire.TypeRequest:
		select { // the reader takes it at once; when it cannot, the asker times out
		case c.frames <- wire.Frame{Type: wire.TypeReplyErr, From: uint32(c.id), To: f.From, ID: f.ID,
			Payload: []byte("a worker run by forkline run answers no requests")}:
		default:
		}
	}
	return nil
}

func (c *commandChannel) SendDirect(f wire.Frame) error                  { return c.Send(f) }
func (c *commandChannel) SendControl(f wire.Frame) error                 { return c.Send(f) }
func (c *commandChannel) SendWait(_ context.Context, f wire.Frame) error { return c.Send(f) }
func (c *commandChannel) SetSendLimit(n int)                             { c.limit = n }
func (c *commandChannel) SendLimit() int                                 { return c.limit }
func (c *commandChannel) Close() error {
	c.once.Do(func() { close(c.done) })
	return nil
}

// notifyBeat is the heartbeat of a command's worker: its WATCHDOG=1
// pings answer the parent's last probe.
type notifyBeat struct {
	mu    sync.Mutex
	seq   uint64
	pings chan struct{} // poked at each WATCHDOG=1; capacity 1
	done  chan struct{}
	once  sync.Once
}

func (b *notifyBeat) Ping(seq uint64) error {
	b.mu.Lock()
	b.seq = seq
	b.mu.Unlock()
	return nil
}

func (b *notifyBeat) pong() {
	select {
	case b.pings <- struct{}{}:
	default:
	}
}

func (b *notifyBeat) Pong() (uint64, error) {
	select {
	case <-b.pings:
		b.mu.Lock()
		defer b.mu.Unlock()
		return b.seq, nil
	case <-b.done:
		return 0, net.ErrClosed
	}
}

func (b *notifyBeat) Close() error {
	b.once.Do(func() { close(b.done) })
	return nil
}

// lastLines keeps the last lines a worker wrote on stderr.
type lastLines struct {
	mu    sync.Mutex
	max   int
	lines []string
}

func (l *lastLines) add(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.lines) == l.max {
		l.lines = l.lines[1:]
	}
	l.lines = append(l.lines, s)
}

func (l *lastLines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, " | ")
}
