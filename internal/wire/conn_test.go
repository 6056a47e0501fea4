//go:build unix

package wire

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// watchdog is how long a test waits for something that should happen at
// once; reaching it fails the test.
const watchdog = 10 * time.Second

// conns returns the two ends of a new channel, closed when the test ends.
func conns(t testing.TB, opts Options) (a, b *Conn) {
	t.Helper()
	fa, fb, err := Pair()
	if err != nil {
		t.Fatal(err)
	}
	if a, err = NewConn(fa, opts); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	if b, err = NewConn(fb, opts); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return a, b
}

// rawConn returns a Conn and the raw peer socket, for hand-made streams.
func rawConn(t *testing.T, opts Options) (*Conn, *os.File) {
	t.Helper()
	fa, fb, err := Pair()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fb.Close() })
	c, err := NewConn(fa, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, fb
}

// recv receives with a watchdog.
func recv(t *testing.T, c *Conn) (Frame, error) {
	t.Helper()
	type result struct {
		f   Frame
		err error
	}
	ch := make(chan result, 1)
	go func() {
		f, err := c.Recv()
		ch <- result{f, err}
	}()
	select {
	case r := <-ch:
		return r.f, r.err
	case <-time.After(watchdog):
		t.Fatal("Recv did not return")
		return Frame{}, nil
	}
}

func mustRecv(t *testing.T, c *Conn) Frame {
	t.Helper()
	f, err := recv(t, c)
	if err != nil {
		t.Fatalf("Recv: %v", err)
	}
	return f
}

func pipe(t *testing.T) (r, w *os.File) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	return r, w
}

// checkPipeFD writes through fd, which should be a duplicate of the write
// end of r, and reads the text back from r. It closes fd.
func checkPipeFD(t *testing.T, fd int, r *os.File, text string) {
	t.Helper()
	w := os.NewFile(uintptr(fd), "received")
	defer w.Close()
	if flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil || flags&unix.FD_CLOEXEC == 0 {
		t.Errorf("received descriptor %d: flags %#x, %v; want close-on-exec", fd, flags, err)
	}
	if _, err := io.WriteString(w, text); err != nil {
		t.Fatalf("write through received descriptor: %v", err)
	}
	buf := make([]byte, len(text))
	if _, err := io.ReadFull(r, buf); err != nil || string(buf) != text {
		t.Fatalf("read %q, %v; want %q", buf, err, text)
	}
}

func TestRoundTripFields(t *testing.T) {
	a, b := conns(t, Options{})
	r, w := pipe(t)
	for _, want := range []Frame{
		{Type: TypeHello, From: 7},
		{Type: TypeReady, From: 7, To: Parent, Payload: []byte("127.0.0.1:8080")},
		{Type: TypePing, From: Parent, To: 7, ID: ^uint64(0)},
		{Type: TypeUser, From: 1, To: Broadcast, ID: 1, Payload: bytes.Repeat([]byte{0xF1}, DefaultMaxPayload)},
		{Type: TypeListener, From: 0xdeadbeef, To: 0x12345678, ID: 0x0102030405060708, Payload: []byte("tcp"), FDs: []int{int(w.Fd())}},
		{Type: 255, Payload: []byte{}},
	} {
		t.Run(want.Type.String(), func(t *testing.T) {
			if err := a.Send(&want); err != nil {
				t.Fatalf("Send: %v", err)
			}
			got := mustRecv(t, b)
			if !frameEqual(got, want) {
				t.Errorf("got %v %d→%d id %d %d bytes %v; want %v %d→%d id %d %d bytes %v",
					got.Type, got.From, got.To, got.ID, len(got.Payload), got.FDs,
					want.Type, want.From, want.To, want.ID, len(want.Payload), want.FDs)
			}
			for _, fd := range got.FDs {
				checkPipeFD(t, fd, r, "through "+want.Type.String())
			}
		})
	}
}

// TestSendCopies checks that Send owns its copy of the payload and of the
// descriptors once it returns.
func TestSendCopies(t *testing.T) {
	a, b := conns(t, Options{})
	r, w := pipe(t)
	fd, err := unix.Dup(int(w.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	p := []byte("original")
	if err := a.Send(&Frame{Type: TypeUser, Payload: p, FDs: []int{fd}}); err != nil {
		t.Fatal(err)
	}
	copy(p, "CHANGED!")
	unix.Close(fd)
	got := mustRecv(t, b)
	if string(got.Payload) != "original" {
		t.Errorf("payload %q, want %q", got.Payload, "original")
	}
	checkPipeFD(t, got.FDs[0], r, "still open")
}

func TestOrderingConcurrentSenders(t *testing.T) {
	const senders, perSender = 8, 5000
	// A small queue makes senders wait on each other and the writer.
	a, b := conns(t, Options{QueueBytes: 4096})
	ctx, cancel := context.WithTimeout(context.Background(), watchdog)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, senders)
	for s := range senders {
		wg.Go(func() {
			for i := range perSender {
				f := Frame{Type: TypeUser, From: uint32(s), ID: uint64(i), Payload: []byte(fmt.Sprint(s, i))}
				send := func() error { return a.SendWait(ctx, &f) }
				if s%2 == 1 && i%3 == 0 {
					// Direct writes mixed in: they must keep each
					// sender's order too. (A full queue is not an error
					// here; wait for room as SendWait does.)
					send = func() error {
						for {
							err := a.SendDirect(&f)
							if !errors.Is(err, ErrQueueFull) {
								return err
							}
							if err := a.SendWait(ctx, &f); !errors.Is(err, ErrQueueFull) {
								return err
							}
						}
					}
				}
				if err := send(); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	next := make([]uint64, senders)
	for range senders * perSender {
		f := mustRecv(t, b)
		if f.ID != next[f.From] || string(f.Payload) != fmt.Sprint(f.From, f.ID) {
			t.Fatalf("from %d: got frame %d (%q), want %d", f.From, f.ID, f.Payload, next[f.From])
		}
		next[f.From]++
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestPassFDsInStream sends descriptor-carrying frames among many plain
// ones, in both directions of batching: some land mid-batch, some alone.
func TestPassFDsInStream(t *testing.T) {
	a, b := conns(t, Options{})
	r, w := pipe(t)
	wfd := int(w.Fd())
	const n = 1000
	fdsAt := map[int]int{0: 1, 1: 2, 500: 1, 501: 0, 502: MaxFDs, 999: 3}
	go func() {
		for i := range n {
			f := Frame{Type: TypeUser, ID: uint64(i), Payload: []byte("payload")}
			for range fdsAt[i] {
				f.FDs = append(f.FDs, wfd)
			}
			if err := a.SendWait(context.Background(), &f); err != nil {
				t.Errorf("SendWait %d: %v", i, err)
				return
			}
		}
	}()
	for i := range n {
		f := mustRecv(t, b)
		if f.ID != uint64(i) || len(f.FDs) != fdsAt[i] {
			t.Fatalf("frame %d: id %d with %d descriptors, want %d", i, f.ID, len(f.FDs), fdsAt[i])
		}
		for j, fd := range f.FDs {
			checkPipeFD(t, fd, r, fmt.Sprintf("frame %d fd %d", i, j))
		}
	}
}

func TestSendTooLarge(t *testing.T) {
	a, _ := conns(t, Options{MaxPayload: 100})
	for _, tc := range []struct {
		name string
		f    Frame
		err  error
	}{
		{"payload", Frame{Type: TypeUser, Payload: make([]byte, 101)}, ErrTooLarge},
		{"descriptors", Frame{Type: TypeUser, FDs: make([]int, MaxFDs+1)}, ErrTooLarge},
		{"zero frame", Frame{}, ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := a.Send(&tc.f); !errors.Is(err, tc.err) {
				t.Errorf("Send = %v, want %v", err, tc.err)
			}
		})
	}
	if err := a.Send(&Frame{Type: TypeUser, FDs: []int{-1}}); err == nil {
		t.Error("Send with a bad descriptor succeeded")
	}
}

func TestRecvErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []byte
		err  error
		msg  string
	}{
		{"garbage", []byte("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"), ErrMalformed, "bad magic 0x41"},
		{"4 GiB", header(TypeUser, 0, ^uint32(0)), ErrTooLarge, "4294967295"},
		{"over MaxPayload", header(TypeUser, 0, 1001), ErrTooLarge, "max 1000"},
		{"descriptors missing", header(TypeListener, 1, 0), ErrMalformed, "1 descriptors, 0 received"},
		{"eof in header", header(TypeUser, 0, 10)[:HeaderLen-1], io.ErrUnexpectedEOF, ""},
		{"eof in payload", append(header(TypeUser, 0, 10), "12345"...), io.ErrUnexpectedEOF, ""},
		{"clean eof", nil, io.EOF, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, peer := rawConn(t, Options{MaxPayload: 1000})
			if _, err := peer.Write(tc.in); err != nil {
				t.Fatal(err)
			}
			peer.Close()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			_, err := recv(t, c)
			runtime.ReadMemStats(&after)
			if !errors.Is(err, tc.err) || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("Recv error %q, want %v containing %q", err, tc.err, tc.msg)
			}
			if got := after.TotalAlloc - before.TotalAlloc; got > 64<<10 {
				t.Errorf("allocated %d bytes", got)
			}
			if _, again := recv(t, c); !errors.Is(again, tc.err) {
				t.Errorf("second Recv = %v, want %v again", again, tc.err)
			}
		})
	}
}

// TestRecvUnclaimedFDs: descriptors whose frame header does not name them
// are closed when the stream fails, not leaked.
func TestRecvUnclaimedFDs(t *testing.T) {
	c, peer := rawConn(t, Options{})
	r, w := pipe(t)
	pc, err := net.FileConn(peer)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	in := append(encode(Frame{Type: TypeUser}), 'X')
	if _, _, err := pc.(*net.UnixConn).WriteMsgUnix(in, unix.UnixRights(int(w.Fd())), nil); err != nil {
		t.Fatal(err)
	}
	pc.Close()
	peer.Close()
	if f := mustRecv(t, c); len(f.FDs) != 0 {
		t.Fatalf("frame got descriptors %v", f.FDs)
	}
	if _, err := recv(t, c); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("Recv = %v, want io.ErrUnexpectedEOF", err)
	}
	// The only write ends left are ours; closing w must give r EOF.
	w.Close()
	if n, err := r.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("pipe read = %d, %v; want EOF (received descriptor leaked)", n, err)
	}
}

// fillQueue sends until the queue stays full: the peer must not be
// reading. Send alone is not enough, since a momentarily full queue drains
// into the socket buffer; a SendWait that times out means the writer made
// no progress at all, because the socket buffer is full too.
func fillQueue(t *testing.T, c *Conn) {
	t.Helper()
	f := Frame{Type: TypeUser, Payload: make([]byte, 1000)}
	for i := 0; ; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		err := c.SendWait(ctx, &f)
		cancel()
		if errors.Is(err, ErrQueueFull) {
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("SendWait = %v, want DeadlineExceeded too", err)
			}
			break
		}
		if err != nil {
			t.Fatalf("SendWait %d: %v", i, err)
		}
		if i > 1e7 {
			t.Fatal("queue never filled")
		}
	}
	if err := c.Send(&f); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("Send on a full queue = %v, want ErrQueueFull", err)
	}
}

func TestQueueFull(t *testing.T) {
	a, b := conns(t, Options{QueueBytes: 8192})
	fillQueue(t, a)
	f := Frame{Type: TypeUser, Payload: []byte("late")}

	// Once the peer reads, SendWait gets through.
	done := make(chan error, 1)
	go func() { done <- a.SendWait(context.Background(), &f) }()
	for {
		g := mustRecv(t, b)
		if string(g.Payload) == "late" {
			break
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// A control frame gets past a full queue, and arrives after what was
// queued before it.
func TestSendControlIgnoresQueueBound(t *testing.T) {
	a, b := conns(t, Options{QueueBytes: 8192})
	fillQueue(t, a)
	if err := a.Send(&Frame{Type: TypeUser, Payload: []byte("x")}); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("Send on a full queue = %v, want ErrQueueFull", err)
	}
	if err := a.SendControl(&Frame{Type: TypeDrain}); err != nil {
		t.Fatalf("SendControl on a full queue = %v", err)
	}
	for {
		if g := mustRecv(t, b); g.Type == TypeDrain {
			break
		}
	}
}

func TestCloseIdempotentAndUnblocks(t *testing.T) {
	a, b := conns(t, Options{QueueBytes: 4096})
	recvErr := make(chan error, 1)
	go func() {
		_, err := b.Recv()
		recvErr <- err
	}()
	fillQueue(t, b)
	sendErr := make(chan error, 1)
	go func() { sendErr <- b.SendWait(context.Background(), &Frame{Type: TypeUser}) }()

	// a reads nothing, so Close gives up flushing after closeFlushTimeout.
	start := time.Now()
	closeErr := b.Close()
	if d := time.Since(start); d > closeFlushTimeout+watchdog/2 {
		t.Errorf("Close took %v", d)
	}
	if !errors.Is(closeErr, os.ErrDeadlineExceeded) {
		t.Errorf("Close = %v, want the abandoned flush reported", closeErr)
	}
	if err := b.Close(); err != closeErr {
		t.Errorf("second Close = %v, want %v", err, closeErr)
	}
	for name, ch := range map[string]chan error{"Recv": recvErr, "SendWait": sendErr} {
		select {
		case err := <-ch:
			if !errors.Is(err, ErrClosed) {
				t.Errorf("%s after Close = %v, want ErrClosed", name, err)
			}
		case <-time.After(watchdog):
			t.Fatalf("%s still blocked after Close", name)
		}
	}
	if err := b.Send(&Frame{Type: TypeUser}); !errors.Is(err, ErrClosed) {
		t.Errorf("Send after Close = %v, want ErrClosed", err)
	}
	if _, err := b.Recv(); !errors.Is(err, ErrClosed) {
		t.Errorf("Recv after Close = %v, want ErrClosed", err)
	}
	_ = a
}

// TestCloseFlushes: what was queued before Close reaches the peer, then EOF.
func TestCloseFlushes(t *testing.T) {
	a, b := conns(t, Options{})
	r, w := pipe(t)
	const n = 10000
	for i := range n {
		f := Frame{Type: TypeUser, ID: uint64(i)}
		if i == n-1 {
			f.FDs = []int{int(w.Fd())}
		}
		if err := a.Send(&f); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan error, 1)
	go func() { done <- a.Close() }()
	for i := range n {
		f := mustRecv(t, b)
		if f.ID != uint64(i) {
			t.Fatalf("frame %d has id %d", i, f.ID)
		}
		for _, fd := range f.FDs {
			checkPipeFD(t, fd, r, "last")
		}
	}
	if _, err := recv(t, b); err != io.EOF {
		t.Errorf("after the last frame: %v, want io.EOF", err)
	}
	if err := <-done; err != nil {
		t.Error(err)
	}
}

// TestWriteError: once the peer is gone, Send reports ErrClosed with the
// cause.
func TestWriteError(t *testing.T) {
	a, b := conns(t, Options{})
	b.Close()
	f := Frame{Type: TypeUser, Payload: make([]byte, 1000)}
	deadline := time.Now().Add(watchdog)
	for {
		err := a.SendWait(context.Background(), &f)
		if err == nil {
			if time.Now().After(deadline) {
				t.Fatal("Send kept succeeding on a dead socket")
			}
			continue
		}
		if !errors.Is(err, ErrClosed) || err == ErrClosed {
			t.Fatalf("Send = %v, want ErrClosed wrapping the cause", err)
		}
		break
	}
}

// TestAllocs holds Send and Recv to their budget: nothing on send, the
// payload on receive.
func TestAllocs(t *testing.T) {
	a, b := conns(t, Options{})
	f := Frame{Type: TypeUser, Payload: make([]byte, 64)}
	if n := testing.AllocsPerRun(1000, func() { a.Send(&f) }); n != 0 {
		t.Errorf("Send: %v allocations", n)
	}
	for range 1001 {
		mustRecv(t, b)
	}
	n := testing.AllocsPerRun(1000, func() {
		if err := a.Send(&f); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Recv(); err != nil {
			t.Fatal(err)
		}
	})
	if n > 1 {
		t.Errorf("Send+Recv: %v allocations, want 1", n)
	}
}

func TestPairCloexec(t *testing.T) {
	a, b, err := Pair()
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	defer b.Close()
	for _, f := range []*os.File{a, b} {
		flags, err := unix.FcntlInt(f.Fd(), unix.F_GETFD, 0)
		if err != nil || flags&unix.FD_CLOEXEC == 0 {
			t.Errorf("%d: flags %#x, %v; want close-on-exec", f.Fd(), flags, err)
		}
	}
}

func TestNewConnErrors(t *testing.T) {
	t.Run("pipe", func(t *testing.T) {
		r, _ := pipe(t)
		f := os.NewFile(uintptr(dup(t, int(r.Fd()))), "pipe")
		if c, err := NewConn(f, Options{}); err == nil {
			c.Close()
			t.Fatal("NewConn of a pipe succeeded")
		}
	})
	t.Run("datagram", func(t *testing.T) {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fds[1])
		if c, err := NewConn(os.NewFile(uintptr(fds[0]), "dgram"), Options{}); err == nil || !strings.Contains(err.Error(), "not a stream") {
			if c != nil {
				c.Close()
			}
			t.Fatalf("NewConn of a datagram socket: %v", err)
		}
	})
	t.Run("nil", func(t *testing.T) {
		if _, err := NewConn(nil, Options{}); err == nil {
			t.Fatal("NewConn(nil) succeeded")
		}
	})
}

func dup(t *testing.T, fd int) int {
	t.Helper()
	d, err := dupCloexec(fd)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestNoFDLeak runs the descriptor-heavy paths and checks that the process
// has as many descriptors afterwards as before.
func TestNoFDLeak(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("counts /proc/self/fd")
	}
	count := func() int {
		ents, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Fatal(err)
		}
		return len(ents)
	}
	scenario := func() {
		a, b := conns(t, Options{})
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		defer w.Close()
		wfd := []int{int(w.Fd()), int(w.Fd())}
		// Received and closed by the caller.
		for range 10 {
			if err := a.Send(&Frame{Type: TypeListener, FDs: wfd}); err != nil {
				t.Fatal(err)
			}
			f := mustRecv(t, b)
			for _, fd := range f.FDs {
				unix.Close(fd)
			}
		}
		// Sent but never received: some still queued in the kernel at
		// Close, some already read by b's recvmsg and pending in its
		// decoder (a plain frame and a descriptor frame behind it come
		// back from one recvmsg, once both are in the socket).
		for range 10 {
			if err := a.Send(&Frame{Type: TypeUser}); err != nil {
				t.Fatal(err)
			}
			if err := a.Send(&Frame{Type: TypeListener, FDs: wfd}); err != nil {
				t.Fatal(err)
			}
		}
		if err := a.Close(); err != nil {
			t.Fatal(err)
		}
		mustRecv(t, b)
		// Refused sends.
		a.Send(&Frame{Type: TypeUser, Payload: make([]byte, DefaultMaxPayload+1), FDs: wfd})
		a.Close()
		b.Close()
		a.Send(&Frame{Type: TypeUser, FDs: wfd})
	}
	scenario() // warm up: the runtime's poller opens descriptors once
	before := count()
	for range 3 {
		scenario()
	}
	if after := count(); after != before {
		t.Errorf("%d descriptors before, %d after", before, after)
	}
}
