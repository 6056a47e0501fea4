//go:build unix

package wire

import (
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Detach stops the Conn without a word to its peer: a Recv waiting in
// another goroutine returns ErrDetached (a frame it was in the middle of
// stays in Pending), what is queued is written (for at most a second), and
// the socket is duplicated and the Conn's own copy closed. Frames the peer
// sends afterwards wait in the socket. Detach may be called once, not after
// Close.
func (c *Conn) Detach() (Detached, error) {
	c.detaching.Store(true)
	c.uc.SetReadDeadline(time.Unix(1, 0)) // wakes a waiting Recv
	c.rmu.Lock()
	d := c.dec
	out := Detached{FD: -1, Pending: append(d.prefix, d.buf[d.r:d.w]...), FDs: d.fds}
	d.prefix, d.fds, d.r, d.w = nil, nil, 0, 0
	if d.err == nil {
		d.err = ErrDetached
	}
	c.rmu.Unlock()

	flushErr := c.stopWriter(ErrDetached)

	var derr error
	cerr := c.rc.Control(func(fd uintptr) {
		out.FD, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	})
	c.closeOnce.Do(func() {
		c.closed.Store(true)
		c.closeErr = c.uc.Close()
	})
	if err := errors.Join(cerr, derr); err != nil {
		closeFDs(out.FDs)
		return Detached{FD: -1}, fmt.Errorf("wire: detach: %w", os.NewSyscallError("fcntl", err))
	}
	if flushErr != nil {
		return out, fmt.Errorf("wire: detach: queued frames not flushed: %w", flushErr)
	}
	return out, nil
}

// NewConnPending is NewConn of a socket that Detach handed over, with what
// the detached Conn had received and not decoded: Recv returns those frames
// first.
func NewConnPending(f *os.File, opts Options, pending []byte, fds []int) (*Conn, error) {
	c, err := NewConn(f, opts)
	if err != nil {
		closeFDs(fds)
		return nil, err
	}
	d := c.dec
	if len(pending) > len(d.buf) {
		d.buf = make([]byte, len(pending)+readBufSize)
	}
	d.w = copy(d.buf, pending)
	d.fds = append(d.fds, fds...)
	return c, nil
}
