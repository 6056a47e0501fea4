package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestTypeString(t *testing.T) {
	for _, tc := range []struct {
		t               Type
		name            string
		reserved, known bool
	}{
		{0, "reserved(0)", true, false},
		{TypeHello, "hello", true, true},
		{TypeListener, "listener", true, true},
		{TypePong, "pong", true, true},
		{TypeRoster, "roster", true, true},
		{TypeRecycle, "recycle", true, true},
		{TypeStopping, "stopping", true, true},
		{LastControl + 1, "reserved(13)", true, false},
		{TypeUser - 1, "reserved(63)", true, false},
		{TypeUser, "user", false, true},
		{TypeReplyErr, "reply-error", false, true},
		{200, "user(200)", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.t.String(); got != tc.name {
				t.Errorf("String() = %q, want %q", got, tc.name)
			}
			if got := tc.t.Reserved(); got != tc.reserved {
				t.Errorf("Reserved() = %v, want %v", got, tc.reserved)
			}
			if got := tc.t.Known(); got != tc.known {
				t.Errorf("Known() = %v, want %v", got, tc.known)
			}
		})
	}
}

// header returns a raw header with the given fields, for hand-made streams.
func header(typ Type, nfds uint8, length uint32) []byte {
	h := make([]byte, HeaderLen)
	h[offMagic] = magic
	h[offVersion] = Version
	h[offType] = byte(typ)
	h[offNFDs] = nfds
	binary.LittleEndian.PutUint32(h[offLen:], length)
	return h
}

func encode(frames ...Frame) []byte {
	var b []byte
	for i := range frames {
		b = appendFrame(b, &frames[i])
	}
	return b
}

func TestDecode(t *testing.T) {
	valid := encode(
		Frame{Type: TypeHello, From: 3},
		Frame{Type: TypeUser, From: 3, To: Broadcast, ID: 1 << 40, Payload: []byte("hi")},
	)
	for _, tc := range []struct {
		name   string
		in     []byte
		frames int
		err    error  // final error
		msg    string // substring of the final error
	}{
		{"empty", nil, 0, io.EOF, ""},
		{"valid", valid, 2, io.EOF, ""},
		{"truncated header", valid[:10], 0, io.ErrUnexpectedEOF, ""},
		{"truncated payload", valid[:len(valid)-1], 1, io.ErrUnexpectedEOF, ""},
		{"bad magic", []byte(strings.Repeat("A", 40)), 0, ErrMalformed, "bad magic 0x41"},
		{"bad version", append([]byte{magic, 2}, make([]byte, 30)...), 0, ErrMalformed, "bad version 2"},
		{"type 0", header(0, 0, 0), 0, ErrMalformed, "type 0"},
		{"too many fds", header(TypeUser, MaxFDs+1, 0), 0, ErrMalformed, "9 descriptors"},
		{"fds missing", header(TypeListener, 1, 0), 0, ErrMalformed, "1 descriptors, 0 received"},
		{"4 GiB", header(TypeUser, 0, ^uint32(0)), 0, ErrTooLarge, "4294967295"},
		{"just too large", header(TypeUser, 0, 1<<16+1), 0, ErrTooLarge, ""},
		{"garbage after valid", append(valid, 0, 1, 2), 2, io.ErrUnexpectedEOF, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newDecoder(readerSource{bytes.NewReader(tc.in)}, 1<<16, 32, nil)
			n := 0
			var err error
			for {
				if _, err = d.next(); err != nil {
					break
				}
				n++
			}
			if n != tc.frames {
				t.Errorf("decoded %d frames, want %d", n, tc.frames)
			}
			if !errors.Is(err, tc.err) || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q, want %v containing %q", err, tc.err, tc.msg)
			}
			if _, again := d.next(); again != err {
				t.Errorf("error not sticky: %v then %v", err, again)
			}
		})
	}
}

// TestDecodeHugeHeaderNoAlloc checks that a header's length is checked before
// anything is allocated for the payload.
func TestDecodeHugeHeaderNoAlloc(t *testing.T) {
	in := header(TypeUser, 0, ^uint32(0))
	d := newDecoder(readerSource{bytes.NewReader(in)}, DefaultMaxPayload, 64, nil)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := d.next()
	runtime.ReadMemStats(&after)
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("err = %v, want ErrTooLarge", err)
	}
	if got := after.TotalAlloc - before.TotalAlloc; got > 64<<10 {
		t.Errorf("allocated %d bytes decoding a 24-byte header", got)
	}
}

// TestDecodeSplit feeds a valid stream one byte per read, so every
// boundary between reads is exercised, including large payloads read
// directly into the frame.
func TestDecodeSplit(t *testing.T) {
	want := []Frame{
		{Type: TypePing, ID: 7},
		{Type: TypeRequest, From: 1, To: 2, ID: 3, Payload: bytes.Repeat([]byte("x"), 100)},
		{Type: TypeReady, From: 9, Payload: []byte("127.0.0.1:80")},
	}
	in := encode(want...)
	d := newDecoder(readerSource{oneByteReader{bytes.NewReader(in)}}, 1<<16, 32, nil)
	for i := range want {
		got, err := d.next()
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if !frameEqual(got, want[i]) {
			t.Errorf("frame %d = %+v, want %+v", i, got, want[i])
		}
	}
	if _, err := d.next(); err != io.EOF {
		t.Errorf("at end: %v, want io.EOF", err)
	}
}

type oneByteReader struct{ r io.Reader }

func (o oneByteReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	return o.r.Read(p[:1])
}

func frameEqual(a, b Frame) bool {
	if a.Type != b.Type || a.From != b.From || a.To != b.To || a.ID != b.ID ||
		!bytes.Equal(a.Payload, b.Payload) || len(a.FDs) != len(b.FDs) {
		return false
	}
	return (a.Payload == nil) == (len(b.Payload) == 0)
}

func TestCheckSend(t *testing.T) {
	for _, tc := range []struct {
		name string
		f    Frame
		err  error
	}{
		{"ok", Frame{Type: TypeUser, Payload: make([]byte, 100)}, nil},
		{"max payload", Frame{Type: TypeUser, Payload: make([]byte, 100)}, nil},
		{"payload too large", Frame{Type: TypeUser, Payload: make([]byte, 101)}, ErrTooLarge},
		{"too many fds", Frame{Type: TypeUser, FDs: make([]int, MaxFDs+1)}, ErrTooLarge},
		{"zero frame", Frame{}, ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := checkSend(&tc.f, 100); !errors.Is(err, tc.err) {
				t.Errorf("checkSend = %v, want %v", err, tc.err)
			}
		})
	}
}
