//go:build unix

package wire

import (
	"errors"
	"fmt"
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
	detaching atomic.Bool // Detach: a read that times out ends with ErrDetached
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

// stopWriter makes every later send fail with reason, lets the writer
// write what is queued (for at most closeFlushTimeout: the deadline also
// fails a write already blocked, which is what we want), waits for it to
// exit, and returns why it gave up, if it did.
func (c *Conn) stopWriter(reason error) error {
	c.uc.SetWriteDeadline(time.Now().Add(closeFlushTimeout))
	c.mu.Lock()
	c.closing = true
	if c.err == nil {
		c.err = reason // what is queued still goes out
	}
	if c.space != nil {
		close(c.space)
		c.space = nil
	}
	c.mu.Unlock()
	c.signal()
	<-c.done

	c.mu.Lock()
	defer c.mu.Unlock()
	closeFDs(c.fds)
	c.buf, c.marks, c.fds = nil, nil, nil
	return c.flushErr
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
		flushErr := c.stopWriter(ErrClosed)

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
