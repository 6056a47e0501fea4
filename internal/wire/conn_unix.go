//go:build unix

package wire

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

const (
	// readBufSize is the receive buffer: one recvmsg can bring in this
	// many bytes of small frames.
	readBufSize = 64 << 10
	// closeFlushTimeout bounds how long Close waits for the queue to drain
	// into a peer that does not read.
	closeFlushTimeout = time.Second
	// keepBufCap: the writer drops a batch buffer that grew beyond this when
	// a batch uses little of it, so one burst does not pin memory for the
	// Conn's life, while a sustained burst does not reallocate every batch.
	keepBufCap = 256 << 10
)

// Pair returns the two ends of a new AF_UNIX SOCK_STREAM socketpair, both
// close-on-exec. Typically one end goes to [NewConn] and the other to a
// child's ExtraFiles (exec clears close-on-exec on the copy it passes).
func Pair() (a, b *os.File, err error) {
	fds, err := socketpair()
	if err != nil {
		return nil, nil, os.NewSyscallError("socketpair", err)
	}
	return os.NewFile(uintptr(fds[0]), "wire"), os.NewFile(uintptr(fds[1]), "wire"), nil
}

// Conn is one end of a framed channel. Send, SendWait and Close are safe for
// concurrent use; Recv must be called from one goroutine at a time.
type Conn struct {
	uc   *net.UnixConn
	rc   syscall.RawConn
	opts Options

	// Receive side. rmu is held by Recv for its whole call (so one reader
	// at a time) and by Close to release pending descriptors.
	rmu    sync.Mutex
	dec    *decoder
	oob    []byte
	recvFn func(fd uintptr) bool // c.recvmsg, bound once so Recv does not allocate
	rp     []byte                // recvmsg argument and results, see recvmsg
	rn     int
	roobn  int
	rflags int
	rerr   error

	// Send side, guarded by mu. Frames are appended to buf; marks records
	// where in buf a descriptor-carrying frame starts, and fds holds the
	// duplicated descriptors in order. The writer swaps these out whole.
	mu       sync.Mutex
	buf      []byte
	marks    []mark
	fds      []int
	queued   int           // bytes in buf plus bytes the writer is writing
	err      error         // set once the Conn is closed for sending
	closing  bool          // Close called: writer drains and exits
	flushErr error         // why the writer gave up after Close was called
	space    chan struct{} // closed when queue room appears; nil if nobody waits
	writing  bool          // a write is in progress (the writer's or a direct one)

	// A direct write (SendDirect): the frame is written from the caller's
	// goroutine. Used only by the sender that set writing.
	direct  []byte
	wn      int
	werr    error
	writeFn func(fd uintptr) bool // c.writeDirect, bound once

	wake chan struct{} // cap 1: the writer has work
	done chan struct{} // closed when the writer has exited

	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error

	// sendLimit bounds the payload of a frame this end sends; it starts
	// at Options.MaxPayload and may be lowered to what the peer accepts
	// (SetSendLimit).
	sendLimit atomic.Int64
}

// mark says that the frame at buf[off:] carries the next n descriptors.
type mark struct{ off, n int }

// NewConn makes a Conn of a connected unix stream socket, such as one end of
// [Pair]. It takes ownership of f: f is closed whether or not NewConn
// succeeds. The Conn's writer goroutine runs until [Conn.Close].
func NewConn(f *os.File, opts Options) (*Conn, error) {
	if f == nil {
		return nil, errors.New("wire: NewConn of nil file")
	}
	nc, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("wire: %w", err)
	}
	uc, ok := nc.(*net.UnixConn)
	if !ok {
		nc.Close()
		return nil, fmt.Errorf("wire: %s is not a unix socket", f.Name())
	}
	rc, err := uc.SyscallConn()
	if err != nil {
		uc.Close()
		return nil, fmt.Errorf("wire: %w", err)
	}
	var typ int
	cerr := rc.Control(func(fd uintptr) {
		typ, err = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TYPE)
	})
	if err == nil {
		err = cerr
	}
	if err != nil {
		uc.Close()
		return nil, fmt.Errorf("wire: %w", os.NewSyscallError("getsockopt", err))
	}
	if typ != unix.SOCK_STREAM {
		uc.Close()
		return nil, fmt.Errorf("wire: %s is not a stream socket", f.Name())
	}

	c := &Conn{
		uc:   uc,
		rc:   rc,
		opts: opts.normalize(),
		oob:  make([]byte, unix.CmsgSpace(maxPendingFDs*4)),
		wake: make(chan struct{}, 1),
		done: make(chan struct{}),
	}
	c.recvFn = c.recvmsg
	c.writeFn = c.writeDirect
	c.sendLimit.Store(int64(c.opts.MaxPayload))
	c.dec = newDecoder(c, c.opts.MaxPayload, readBufSize, closeFD)
	go c.writeLoop()
	return c, nil
}

func closeFD(fd int) { unix.Close(fd) }

func closeFDs(fds []int) { CloseFDs(fds) }

// CloseFDs closes descriptors received in frames (Frame.FDs) that nobody
// will own.
func CloseFDs(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

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

// SetSendLimit sets the largest payload this end sends: a frame with a
// larger payload is refused by the Send methods with ErrTooLarge. Two ends
// agree on it when the channel opens (see Welcome), so that neither sends
// what the other's decoder would reject. It does not change what Recv
// accepts (Options.MaxPayload). n <= 0 means Options.MaxPayload. It is safe
// for concurrent use.
func (c *Conn) SetSendLimit(n int) {
	if n <= 0 || n > c.opts.MaxPayload {
		n = c.opts.MaxPayload
	}
	c.sendLimit.Store(int64(n))
}

// SendLimit returns the largest payload this end sends.
func (c *Conn) SendLimit() int { return int(c.sendLimit.Load()) }

// SetReadDeadline bounds a Recv that waits, as net.Conn's does; a Recv
// that fails on it fails the Conn's receive side for good.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.uc.SetReadDeadline(t) }

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

// Close flushes what is queued, giving up after one second if the peer does
// not read (then the error wraps os.ErrDeadlineExceeded), stops the writer
// goroutine and waits for it, and closes the socket. Descriptors queued or received but not handed out are closed. A
// Recv blocked in another goroutine returns an error wrapping ErrClosed, and
// so do later calls of every method. Close can safely be called multiple
// times; later calls return the result of the first.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() {
		c.closed.Store(true)
		// The deadline bounds the flush; it also fails a write that is
		// already blocked, which is what we want.
		c.uc.SetWriteDeadline(time.Now().Add(closeFlushTimeout))
		c.mu.Lock()
		c.closing = true
		if c.err == nil {
			c.err = ErrClosed // what is queued still goes out
		}
		if c.space != nil {
			close(c.space)
			c.space = nil
		}
		c.mu.Unlock()
		c.signal()
		<-c.done

		c.mu.Lock()
		closeFDs(c.fds)
		c.buf, c.marks, c.fds = nil, nil, nil
		flushErr := c.flushErr
		c.mu.Unlock()

		// Closing the socket wakes a blocked Recv; then rmu is ours.
		err := c.uc.Close()
		if flushErr != nil {
			err = fmt.Errorf("wire: close: queued frames not flushed: %w", flushErr)
		}
		c.closeErr = err
		c.rmu.Lock()
		c.dec.fail(ErrClosed)
		c.rmu.Unlock()
	})
	return c.closeErr
}
