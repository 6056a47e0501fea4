//go:build unix

package wire

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// The receive side of a Conn: recvmsg into the decoder, with the
// descriptors that come along.

// Recv returns the next frame. It must not be called from more than one
// goroutine at a time.
//
// The payload is freshly allocated (nil when empty) and the descriptors in
// FDs belong to the caller, who must close them. Recv returns io.EOF when
// the peer closed between frames and io.ErrUnexpectedEOF when it closed in
// the middle of one. A frame that breaks the protocol yields an error
// wrapping ErrMalformed or ErrTooLarge that says what was wrong; after any
// error the Conn receives nothing more. After Close, Recv returns an error
// wrapping ErrClosed.
func (c *Conn) Recv() (Frame, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if c.closed.Load() {
		c.dec.fail(ErrClosed)
	}
	return c.dec.next()
}

// read implements source for the decoder.
func (c *Conn) read(p []byte, fds *[]int) (int, error) {
	c.rp = p
	c.rn, c.roobn, c.rflags, c.rerr = 0, 0, 0, nil // a Read that fails before recvmsg (a deadline) read nothing
	err := c.rc.Read(c.recvFn)
	c.rp = nil
	if err == nil {
		err = c.rerr
	}
	n := c.rn
	if c.roobn > 0 {
		if perr := parseRights(c.oob[:c.roobn], fds); perr != nil && err == nil {
			err = perr
		}
	}
	if c.rflags&unix.MSG_CTRUNC != 0 && err == nil {
		err = fmt.Errorf("%w: descriptors truncated", ErrMalformed)
	}
	if err != nil {
		if c.detaching.Load() && errors.Is(err, os.ErrDeadlineExceeded) {
			return n, ErrDetached
		}
		if c.closed.Load() || errors.Is(err, net.ErrClosed) {
			err = fmt.Errorf("%w: %w", ErrClosed, err)
		}
		return n, err
	}
	if n == 0 {
		return 0, io.EOF
	}
	return n, nil
}

// recvmsg runs inside RawConn.Read; it reports false to wait for the socket
// to become readable.
func (c *Conn) recvmsg(fd uintptr) bool {
	for {
		// syscall, not x/sys/unix: unix.Recvmsg lets its sockaddr buffer
		// escape, one allocation per call (x/sys v0.50.0), which would
		// double the allocations of Recv; syscall.Recvmsg makes none.
		n, oobn, flags, _, err := syscall.Recvmsg(int(fd), c.rp, c.oob, recvFlags)
		if err == syscall.EINTR {
			continue
		}
		if err == syscall.EAGAIN {
			return false
		}
		if err != nil {
			n, oobn, flags = 0, 0, 0
			err = os.NewSyscallError("recvmsg", err)
		}
		c.rn, c.roobn, c.rflags, c.rerr = n, oobn, flags, err
		return true
	}
}

// parseRights appends the descriptors in the control messages oob to *fds.
func parseRights(oob []byte, fds *[]int) error {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return fmt.Errorf("%w: control message: %w", ErrMalformed, err)
	}
	for i := range msgs {
		if msgs[i].Header.Level != unix.SOL_SOCKET || msgs[i].Header.Type != unix.SCM_RIGHTS {
			continue
		}
		got, err := unix.ParseUnixRights(&msgs[i])
		if err != nil {
			return fmt.Errorf("%w: control message: %w", ErrMalformed, err)
		}
		setCloexec(got)
		*fds = append(*fds, got...)
	}
	return nil
}
