package wire

import (
	"bytes"
	"errors"
	"os"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Detach hands the socket over at a frame boundary: a Recv blocked in the
// middle of a large frame's payload returns ErrDetached, and the frame's
// start comes with the socket to the Conn that takes it over, which then
// returns that frame whole once the rest arrives; what the detached Conn
// had queued was written first. Frames before it were returned once, the
// descriptor with one of them included.
func TestDetachHandsOverAPartialFrame(t *testing.T) {
	fa, fb, err := Pair()
	if err != nil {
		t.Fatal(err)
	}
	a, err := NewConn(fa, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer fb.Close()
	raw := int(fb.Fd())
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	defer pw.Close()

	// From a raw peer: frame 0, frame 1 with a descriptor, then half of a
	// frame 2 whose payload is three read buffers long.
	if err := unix.Sendmsg(raw, appendFrame(nil, &Frame{Type: TypeUser, ID: 0, Payload: []byte("zero")}), nil, nil, 0); err != nil {
		t.Fatal(err)
	}
	withFD := appendFrame(nil, &Frame{Type: TypeUser, ID: 1, Payload: []byte("one"), FDs: []int{int(pw.Fd())}})
	if err := unix.Sendmsg(raw, withFD, unix.UnixRights(int(pw.Fd())), nil, 0); err != nil {
		t.Fatal(err)
	}
	big := make([]byte, 3*readBufSize)
	for i := range big {
		big[i] = byte(i * 7)
	}
	last := appendFrame(nil, &Frame{Type: TypeUser, ID: 2, Payload: big})
	half := len(last) / 2
	if err := unix.SetNonblock(raw, false); err != nil {
		t.Fatal(err)
	}
	proceed, wrote := make(chan struct{}), make(chan error, 2)
	go func() { // more than the socket buffer takes at once: a goroutine of its own
		_, err := unix.Write(raw, last[:half])
		wrote <- err
		<-proceed
		_, err = unix.Write(raw, last[half:])
		wrote <- err
	}()

	if err := a.Send(&Frame{Type: TypeUser, ID: 99, Payload: []byte("queued before the detach")}); err != nil {
		t.Fatal(err)
	}
	frames := make(chan Frame, 4)
	ended := make(chan error, 1)
	go func() {
		for {
			f, err := a.Recv()
			if err != nil {
				ended <- err
				return
			}
			frames <- f
		}
	}()
	for want := range 2 {
		select {
		case f := <-frames:
			if f.ID != uint64(want) {
				t.Fatalf("frame %d, want %d", f.ID, want)
			}
			if want == 1 {
				if len(f.FDs) != 1 {
					t.Fatalf("frame 1 came with %d descriptors", len(f.FDs))
				}
				CloseFDs(f.FDs)
			}
		case <-time.After(watchdog):
			t.Fatal("no frame")
		}
	}
	// Detach once the reader has taken in the first half of frame 2.
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(watchdog)
	for unread(t, a) > 0 {
		if time.Now().After(deadline) {
			t.Fatal("the reader does not read")
		}
		runtime.Gosched()
	}
	d, err := a.Detach()
	if err != nil {
		t.Fatal(err)
	}
	if err := <-ended; !errors.Is(err, ErrDetached) {
		t.Fatalf("the blocked Recv returned %v, want ErrDetached", err)
	}
	if len(d.Pending) == 0 || len(d.Pending) >= len(last) {
		t.Fatalf("pending %d bytes of a frame of %d", len(d.Pending), len(last))
	}

	b, err := NewConnPending(os.NewFile(uintptr(d.FD), "taken over"), Options{}, d.Pending, d.FDs)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	// The rest of frame 2 is written only after what the raw peer reads
	// back: the queued frame, which Detach flushed.
	got := make([]byte, 0, 256)
	buf := make([]byte, 256)
	for !bytes.Contains(got, []byte("queued before the detach")) {
		n, err := unix.Read(raw, buf)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, buf[:n]...)
	}
	close(proceed)
	f, err := b.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if f.ID != 2 || !bytes.Equal(f.Payload, big) {
		t.Fatalf("frame %d with %d bytes, want frame 2 whole (%d bytes)", f.ID, len(f.Payload), len(big))
	}
	if err := a.Send(&Frame{Type: TypeUser, Payload: []byte("late")}); !errors.Is(err, ErrDetached) {
		t.Errorf("Send after Detach: %v", err)
	}
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
}

// unread is how many bytes wait in c's socket, not yet read.
func unread(t *testing.T, c *Conn) int {
	var n int
	var ierr error
	if err := c.rc.Control(func(fd uintptr) { n, ierr = unix.IoctlGetInt(int(fd), unix.TIOCINQ) }); err != nil || ierr != nil {
		t.Fatal(err, ierr)
	}
	return n
}
