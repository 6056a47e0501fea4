//go:build unix

package wire

import (
	"context"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// The send side of a Conn: the bounded queue, direct writes, and the
// writer goroutine that batches what is queued.

// Send queues f without blocking. It fails with ErrTooLarge if f exceeds
// the limits, ErrQueueFull if the queue has no room, and ErrClosed (wrapping
// the cause if a write failed) once the Conn is closed for sending.
//
// The payload is copied and the descriptors are duplicated before Send
// returns, so the caller keeps its own descriptors and may close them. Send
// is safe for concurrent use; frames sent by one goroutine are written in
// the order of the calls.
func (c *Conn) Send(f *Frame) error {
	return c.send(context.Background(), false, f, false)
}

// SendDirect is Send for a lone, latency-bound frame (a request, a reply):
// when nothing is queued and no write is in progress, it writes the frame
// from the caller's goroutine with one non-blocking write instead of waking
// the writer goroutine, which saves a goroutine switch. What the socket does
// not take at once is queued as Send would. For a stream of frames Send is
// better: the writer batches them into fewer system calls.
func (c *Conn) SendDirect(f *Frame) error {
	if err := checkSend(f, c.SendLimit()); err != nil {
		return err
	}
	c.mu.Lock()
	if len(f.FDs) > 0 || len(c.buf) > 0 || c.writing || c.err != nil {
		c.mu.Unlock()
		return c.send(context.Background(), false, f, false)
	}
	size := HeaderLen + len(f.Payload)
	c.writing = true
	c.queued += size
	c.direct = appendFrame(c.direct[:0], f)
	c.mu.Unlock()

	c.wn, c.werr = 0, nil
	err := c.rc.Write(c.writeFn)
	if err == nil && c.werr != nil && c.werr != unix.EAGAIN && c.werr != unix.EINTR {
		err = c.werr
	}

	c.mu.Lock()
	c.writing = false
	c.queued -= size
	if err != nil {
		if c.err == nil {
			c.err = fmt.Errorf("%w: %w", ErrClosed, err)
		}
		err = c.err
	} else if rest := c.direct[c.wn:]; len(rest) > 0 {
		// The unwritten tail goes before what others queued meanwhile.
		b := make([]byte, 0, len(rest)+len(c.buf))
		b = append(append(b, rest...), c.buf...)
		for i := range c.marks {
			c.marks[i].off += len(rest)
		}
		c.buf = b
		c.queued += len(rest)
	}
	wake := len(c.buf) > 0 || c.closing || err != nil
	c.mu.Unlock()
	if wake {
		c.signal()
	}
	return err
}

// writeDirect is SendDirect's RawConn.Write callback: one attempt, no wait.
func (c *Conn) writeDirect(fd uintptr) bool {
	n, err := unix.Write(int(fd), c.direct)
	c.wn, c.werr = max(n, 0), err
	return true
}

// SendControl is Send for the small control frames that must not be lost
// to a full queue (a drain request, a liveness answer): it is not bounded
// by Options.QueueBytes. A peer that does not read still gets it when it
// reads again.
func (c *Conn) SendControl(f *Frame) error {
	return c.send(context.Background(), false, f, true)
}

// SendWait is like Send but waits for room in the queue until ctx is done;
// then it returns an error wrapping both ErrQueueFull and ctx.Err().
func (c *Conn) SendWait(ctx context.Context, f *Frame) error {
	return c.send(ctx, true, f, false)
}

func (c *Conn) send(ctx context.Context, wait bool, f *Frame, control bool) error {
	if err := checkSend(f, c.SendLimit()); err != nil {
		return err
	}
	var dups [MaxFDs]int
	nfds := len(f.FDs)
	for i, fd := range f.FDs {
		d, err := dupCloexec(fd)
		if err != nil {
			closeFDs(dups[:i])
			return fmt.Errorf("wire: duplicating descriptor %d: %w", fd, os.NewSyscallError("fcntl", err))
		}
		dups[i] = d
	}
	size := HeaderLen + len(f.Payload)
	for {
		c.mu.Lock()
		if c.err != nil {
			err := c.err
			c.mu.Unlock()
			closeFDs(dups[:nfds])
			return err
		}
		if control || c.queued == 0 || c.queued+size <= c.opts.QueueBytes {
			break
		}
		if !wait {
			c.mu.Unlock()
			closeFDs(dups[:nfds])
			return ErrQueueFull
		}
		if c.space == nil {
			c.space = make(chan struct{})
		}
		space := c.space
		c.mu.Unlock()
		select {
		case <-space:
		case <-ctx.Done():
			closeFDs(dups[:nfds])
			return fmt.Errorf("%w: %w", ErrQueueFull, ctx.Err())
		}
	}
	wasEmpty := len(c.buf) == 0
	if nfds > 0 {
		c.marks = append(c.marks, mark{off: len(c.buf), n: nfds})
		c.fds = append(c.fds, dups[:nfds]...)
	}
	c.buf = appendFrame(c.buf, f)
	c.queued += size
	c.mu.Unlock()
	if wasEmpty {
		c.signal()
	}
	return nil
}

// signal wakes the writer. A token left over from an earlier wake-up only
// costs the writer one look at an empty queue.
func (c *Conn) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// writeLoop is the writer goroutine: it swaps the queued batch for its own
// empty buffers and writes the batch, until Close finds the queue drained or
// a write fails.
func (c *Conn) writeLoop() {
	defer close(c.done)
	var (
		buf   []byte
		marks []mark
		fds   []int
	)
	for {
		c.mu.Lock()
		for c.writing || (len(c.buf) == 0 && !c.closing) {
			c.mu.Unlock()
			<-c.wake
			c.mu.Lock()
		}
		if len(c.buf) == 0 {
			c.mu.Unlock()
			return
		}
		c.writing = true
		buf, c.buf = c.buf, buf[:0]
		marks, c.marks = c.marks, marks[:0]
		fds, c.fds = c.fds, fds[:0]
		c.mu.Unlock()

		err := c.flush(buf, marks, fds)

		c.mu.Lock()
		c.writing = false
		c.queued -= len(buf)
		if err != nil {
			if c.closing {
				c.flushErr = err
			}
			c.err = fmt.Errorf("%w: %w", ErrClosed, err)
			// Nothing more will be written; release what is queued.
			closeFDs(c.fds)
			c.buf, c.marks, c.fds, c.queued = nil, nil, nil, 0
		}
		if c.space != nil {
			close(c.space)
			c.space = nil
		}
		c.mu.Unlock()
		if err != nil {
			return
		}
		if cap(buf) > keepBufCap && len(buf) < cap(buf)/8 {
			// The burst that grew it is over; let it go.
			buf = nil
		}
	}
}

// flush writes one batch. Plain stretches go out with write; each frame
// that carries descriptors starts a sendmsg of its own, so the rights
// arrive with that frame's first byte. The batch's descriptor duplicates
// are closed in every case: once sent, the kernel holds its own references.
func (c *Conn) flush(b []byte, marks []mark, fds []int) error {
	defer closeFDs(fds)
	off := 0
	for i, m := range marks {
		if err := c.write(b[off:m.off]); err != nil {
			return err
		}
		end := len(b)
		if i+1 < len(marks) {
			end = marks[i+1].off
		}
		rights := unix.UnixRights(fds[:m.n]...)
		fds = fds[m.n:]
		n, _, err := c.uc.WriteMsgUnix(b[m.off:end], rights, nil)
		if err != nil {
			return err
		}
		if err := c.write(b[m.off+n : end]); err != nil {
			return err
		}
		off = end
	}
	return c.write(b[off:])
}

func (c *Conn) write(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	_, err := c.uc.Write(b)
	return err
}
