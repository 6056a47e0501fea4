package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Header layout: byte offsets of the fields.
const (
	offMagic   = 0
	offVersion = 1
	offType    = 2
	offNFDs    = 3
	offFrom    = 4
	offTo      = 8
	offID      = 12
	offLen     = 20
)

// maxPendingFDs bounds the descriptors received but not yet claimed by a
// frame header. The sender starts every descriptor-carrying frame with its
// own sendmsg, so an honest peer has at most a frame or two of descriptors
// outstanding; anything beyond this is a peer trying to make us hoard
// descriptors.
const maxPendingFDs = 8 * MaxFDs

// checkSend validates f before it is queued.
func checkSend(f *Frame, maxPayload int) error {
	if f.Type == 0 {
		return fmt.Errorf("%w: type 0", ErrMalformed)
	}
	if len(f.Payload) > maxPayload {
		return fmt.Errorf("%w: payload %d bytes, max %d", ErrTooLarge, len(f.Payload), maxPayload)
	}
	if len(f.FDs) > MaxFDs {
		return fmt.Errorf("%w: %d descriptors, max %d", ErrTooLarge, len(f.FDs), MaxFDs)
	}
	return nil
}

// appendFrame appends the encoding of f, which checkSend accepted, to b.
func appendFrame(b []byte, f *Frame) []byte {
	var h [HeaderLen]byte
	h[offMagic] = magic
	h[offVersion] = Version
	h[offType] = byte(f.Type)
	h[offNFDs] = byte(len(f.FDs))
	binary.LittleEndian.PutUint32(h[offFrom:], f.From)
	binary.LittleEndian.PutUint32(h[offTo:], f.To)
	binary.LittleEndian.PutUint64(h[offID:], f.ID)
	binary.LittleEndian.PutUint32(h[offLen:], uint32(len(f.Payload)))
	b = append(b, h[:]...)
	return append(b, f.Payload...)
}

// source is what a decoder reads from: like io.Reader, except that
// descriptors received along with the bytes are appended to *fds.
type source interface {
	read(p []byte, fds *[]int) (int, error)
}

// readerSource adapts an io.Reader, which carries no descriptors.
type readerSource struct{ r io.Reader }

func (s readerSource) read(p []byte, _ *[]int) (int, error) { return s.r.Read(p) }

// decoder splits a byte stream into frames. It never allocates more than
// maxPayload bytes for a frame, whatever the header says, and it checks the
// header before allocating anything.
type decoder struct {
	src        source
	maxPayload int
	closeFD    func(int) // releases descriptors nobody will own; nil if src carries none

	buf  []byte // read buffer; buf[r:w] is unconsumed
	r, w int
	// prefix is the start of a frame that a detach interrupted: its header
	// and the payload bytes read so far, which buf no longer holds.
	prefix []byte
	hdr    [HeaderLen]byte // the header of the frame being decoded
	fds    []int           // received descriptors not yet claimed, oldest first
	err    error           // sticky: once set, every call returns it
}

func newDecoder(src source, maxPayload, bufSize int, closeFD func(int)) *decoder {
	if bufSize < HeaderLen {
		bufSize = HeaderLen
	}
	return &decoder{src: src, maxPayload: maxPayload, closeFD: closeFD, buf: make([]byte, bufSize)}
}

// next returns the next frame. After an error, including io.EOF, the decoder
// has released every pending descriptor and returns the same error forever.
func (d *decoder) next() (Frame, error) {
	if d.err != nil {
		return Frame{}, d.err
	}
	f, err := d.decode()
	switch {
	case errors.Is(err, ErrDetached):
		d.err = err // what was received stays for Detach to hand over
	case err != nil:
		d.fail(err)
	}
	return f, err
}

// fail makes err sticky and closes the descriptors nobody will claim.
func (d *decoder) fail(err error) {
	if d.err == nil {
		d.err = err
	}
	d.releaseFDs()
}

func (d *decoder) releaseFDs() {
	if d.closeFD != nil {
		for _, fd := range d.fds {
			d.closeFD(fd)
		}
	}
	d.fds = d.fds[:0]
}

func (d *decoder) decode() (Frame, error) {
	if err := d.fill(HeaderLen); err != nil {
		if err == io.EOF && d.w == d.r {
			return Frame{}, io.EOF
		}
		return Frame{}, noEOF(err)
	}
	f, n, nfds, err := d.header()
	if err != nil {
		return Frame{}, err
	}
	copy(d.hdr[:], d.buf[d.r:]) // a detach in the payload keeps it (see prefix)
	d.r += HeaderLen
	if n > 0 {
		var got int
		if f.Payload, got, err = d.payload(n); err != nil {
			if errors.Is(err, ErrDetached) {
				d.prefix = append(d.hdr[:], f.Payload[:got]...)
			}
			return Frame{}, err
		}
	}
	if nfds > 0 {
		f.FDs = make([]int, nfds)
		copy(f.FDs, d.fds)
		d.fds = d.fds[:copy(d.fds, d.fds[nfds:])]
	}
	return f, nil
}

// header checks the header at buf[r:] and returns its frame, payload
// length and descriptor count; it allocates nothing.
func (d *decoder) header() (f Frame, n, nfds int, err error) {
	h := d.buf[d.r : d.r+HeaderLen]
	switch {
	case h[offMagic] != magic:
		return f, 0, 0, fmt.Errorf("%w: bad magic %#02x", ErrMalformed, h[offMagic])
	case h[offVersion] != Version:
		return f, 0, 0, fmt.Errorf("%w: bad version %d", ErrMalformed, h[offVersion])
	case h[offType] == 0:
		return f, 0, 0, fmt.Errorf("%w: type 0", ErrMalformed)
	}
	nfds = int(h[offNFDs])
	if nfds > MaxFDs {
		return f, 0, 0, fmt.Errorf("%w: %d descriptors, max %d", ErrMalformed, nfds, MaxFDs)
	}
	length := binary.LittleEndian.Uint32(h[offLen:])
	if uint64(length) > uint64(d.maxPayload) {
		return f, 0, 0, fmt.Errorf("%w: payload %d bytes, max %d", ErrTooLarge, length, d.maxPayload)
	}
	// The descriptors arrive no later than the first byte of their frame,
	// so they must be here by now.
	if nfds > len(d.fds) {
		return f, 0, 0, fmt.Errorf("%w: header names %d descriptors, %d received", ErrMalformed, nfds, len(d.fds))
	}
	f = Frame{
		Type: Type(h[offType]),
		From: binary.LittleEndian.Uint32(h[offFrom:]),
		To:   binary.LittleEndian.Uint32(h[offTo:]),
		ID:   binary.LittleEndian.Uint64(h[offID:]),
	}
	return f, int(length), nfds, nil
}

// payload reads the n payload bytes that follow the header; on an error,
// p[:got] is what it had read.
func (d *decoder) payload(n int) (p []byte, got int, err error) {
	p = make([]byte, n)
	got = copy(p, d.buf[d.r:d.w])
	d.r += got
	for got < len(p) {
		rest := len(p) - got
		if rest >= len(d.buf) {
			// Large payload: read straight into it, never past it.
			m, err := d.read(p[got:])
			got += m
			if err != nil && got < len(p) {
				return p, got, noEOF(err)
			}
			continue
		}
		if err := d.fill(rest); err != nil {
			return p, got, noEOF(err)
		}
		got += copy(p[got:], d.buf[d.r:d.r+rest])
		d.r += rest
	}
	return p, got, nil
}

// fill makes sure buf[r:w] holds at least n bytes; n <= len(buf).
func (d *decoder) fill(n int) error {
	if d.w-d.r >= n {
		return nil
	}
	if d.r+n > len(d.buf) {
		d.w = copy(d.buf, d.buf[d.r:d.w])
		d.r = 0
	}
	for d.w-d.r < n {
		m, err := d.read(d.buf[d.w:])
		d.w += m
		if err != nil {
			if d.w-d.r >= n {
				return nil // keep the error for the next read
			}
			return err
		}
	}
	return nil
}

// read reads once from src and enforces the bound on pending descriptors.
func (d *decoder) read(p []byte) (int, error) {
	n, err := d.src.read(p, &d.fds)
	if len(d.fds) > maxPendingFDs {
		return n, fmt.Errorf("%w: %d descriptors received ahead of their frames", ErrMalformed, len(d.fds))
	}
	if n == 0 && err == nil {
		// A well-behaved source does not do this for long; a stream
		// socket never does.
		return 0, io.ErrNoProgress
	}
	return n, err
}

func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
