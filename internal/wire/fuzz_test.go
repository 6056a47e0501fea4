package wire

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// fuzzMaxPayload keeps the fuzzer's allocations small; the decoder must
// respect it whatever the input claims.
const fuzzMaxPayload = 4096

// FuzzDecode feeds arbitrary bytes to the decoder. It must not panic,
// must fail only with the documented errors, must never return a payload
// above the limit, and every frame it does return must encode back to
// exactly the bytes it was decoded from. The corpus under
// testdata/fuzz/FuzzDecode holds valid, truncated and hostile streams.
func FuzzDecode(f *testing.F) {
	f.Add(encode(Frame{Type: TypeHello, From: 1}))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, bufSize := range []int{HeaderLen, 100, 64 << 10} {
			// Reads of every size up to the whole input, so frames
			// straddle read boundaries.
			src := readerSource{&chunkReader{data: data, n: 7}}
			d := newDecoder(src, fuzzMaxPayload, bufSize, nil)
			consumed := 0
			for {
				fr, err := d.next()
				if err != nil {
					if err != io.EOF && err != io.ErrUnexpectedEOF &&
						!errors.Is(err, ErrMalformed) && !errors.Is(err, ErrTooLarge) {
						t.Fatalf("unexpected error %v", err)
					}
					if err == io.EOF && consumed != len(data) {
						t.Fatalf("io.EOF after %d of %d bytes", consumed, len(data))
					}
					break
				}
				if len(fr.Payload) > fuzzMaxPayload {
					t.Fatalf("payload of %d bytes, limit %d", len(fr.Payload), fuzzMaxPayload)
				}
				if len(fr.FDs) != 0 {
					t.Fatalf("descriptors out of a byte stream: %v", fr.FDs)
				}
				enc := appendFrame(nil, &fr)
				if !bytes.Equal(enc, data[consumed:consumed+len(enc)]) {
					t.Fatalf("frame %+v re-encodes to %x, decoded from %x",
						fr, enc, data[consumed:consumed+len(enc)])
				}
				consumed += len(enc)
			}
		}

		// The same bytes read as the fields of a frame: encode then
		// decode must give the frame back.
		if len(data) < HeaderLen {
			return
		}
		want := Frame{
			Type:    Type(data[offType]) | 1,
			From:    uint32(data[0]) << 24,
			To:      uint32(data[1]) | uint32(data[5])<<16,
			ID:      uint64(data[2])<<56 | uint64(data[3]),
			Payload: data[HeaderLen:min(len(data), HeaderLen+fuzzMaxPayload)],
		}
		if err := checkSend(&want, fuzzMaxPayload); err != nil {
			t.Fatalf("checkSend(%+v): %v", want, err)
		}
		d := newDecoder(readerSource{bytes.NewReader(appendFrame(nil, &want))}, fuzzMaxPayload, 64, nil)
		got, err := d.next()
		if err != nil {
			t.Fatalf("decoding an encoded frame: %v", err)
		}
		if !frameEqual(got, want) {
			t.Fatalf("round trip: got %+v, want %+v", got, want)
		}
		if _, err := d.next(); err != io.EOF {
			t.Fatalf("after the only frame: %v, want io.EOF", err)
		}
	})
}

// chunkReader returns its data in reads of 1, 2, ... n bytes, cycling.
type chunkReader struct {
	data []byte
	n, k int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	c.k = c.k%c.n + 1
	m := copy(p[:min(len(p), c.k)], c.data)
	c.data = c.data[m:]
	return m, nil
}
