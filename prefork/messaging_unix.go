//go:build unix

package prefork

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/forkline/forkline/internal/sockfd"
	"github.com/forkline/forkline/internal/wire"
)

// requests keeps one process's requests that wait for a reply.
type requests struct {
	mu      sync.Mutex
	next    uint64
	pending map[uint64]chan reply
	closed  error // set once the channel is gone: new requests fail with it
}

type reply struct {
	data []byte
	err  error
}

// do sends a request with send, which gets the request's id, and waits for
// its reply or for ctx.
func (r *requests) do(ctx context.Context, send func(id uint64) error) ([]byte, error) {
	ch := make(chan reply, 1)
	r.mu.Lock()
	if r.closed != nil {
		r.mu.Unlock()
		return nil, r.closed
	}
	if r.pending == nil {
		r.pending = make(map[uint64]chan reply)
	}
	r.next++
	id := r.next
	r.pending[id] = ch
	r.mu.Unlock()
	if err := send(id); err != nil {
		r.complete(id, reply{})
		return nil, err
	}
	select {
	case rep := <-ch:
		return rep.data, rep.err
	case <-ctx.Done():
		r.complete(id, reply{}) // a late reply finds nothing and is dropped
		return nil, ctx.Err()
	}
}

// complete hands rep to the request id, if it still waits.
func (r *requests) complete(id uint64, rep reply) {
	r.mu.Lock()
	ch, ok := r.pending[id]
	delete(r.pending, id)
	r.mu.Unlock()
	if ok {
		ch <- rep
	}
}

// fail ends every waiting request, and every later one, with err.
func (r *requests) fail(err error) {
	r.mu.Lock()
	r.closed = err
	pending := r.pending
	r.pending = nil
	r.mu.Unlock()
	for _, ch := range pending {
		ch <- reply{err: err}
	}
}

// onReply completes a request from a reply frame.
func (r *requests) onReply(f *wire.Frame) {
	rep := reply{data: f.Payload}
	if f.Type == wire.TypeReplyErr {
		rep = reply{err: fmt.Errorf("prefork: request to %s failed: %s", addrName(int(f.From)), f.Payload)}
	}
	r.complete(f.ID, rep)
}

func addrName(id int) string {
	if id == Parent {
		return "parent"
	}
	return "worker " + strconv.Itoa(id)
}

// responder runs request handlers, each in a goroutine of its own (a
// handler may itself send a request), and waits for them on close.
type responder struct {
	wg      sync.WaitGroup
	handler func(Message) ([]byte, error)
}

// serve answers the request f on conn.
func (rs *responder) serve(f wire.Frame, self int, conn *wire.Conn) {
	rs.wg.Add(1)
	go func() {
		defer rs.wg.Done()
		out := &wire.Frame{Type: wire.TypeReply, From: uint32(self), To: f.From, ID: f.ID}
		if rs.handler == nil {
			closeFDs(f.FDs)
			out.Type, out.Payload = wire.TypeReplyErr, []byte(addrName(self)+" has no OnRequest handler")
		} else if data, err := rs.handler(message(&f)); err != nil {
			out.Type, out.Payload = wire.TypeReplyErr, []byte(err.Error())
		} else {
			out.Payload = data
		}
		err := conn.SendDirect(out)
		if err == nil || errors.Is(err, wire.ErrClosed) {
			return // a requester that has gone away does not need it
		}
		// The reply is too large, or the queue is full: rather than leave
		// the requester waiting for its deadline, say why. Control frames
		// skip the queue bound, and this one is small.
		conn.SendControl(&wire.Frame{
			Type: wire.TypeReplyErr, From: out.From, To: out.To, ID: out.ID,
			Payload: []byte("the reply could not be sent: " + sendErr(int(f.From), err).Error()),
		})
	}()
}

// message turns a received user frame into a Message; its descriptors
// become the receiver's files. A Message is passed by value: with the
// payload Recv allocates, a message costs one allocation to receive.
func message(f *wire.Frame) Message {
	m := Message{From: int(f.From), Data: f.Payload}
	for _, fd := range f.FDs {
		m.Files = append(m.Files, os.NewFile(uintptr(fd), "forkline-message-file"))
	}
	return m
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// userFrame builds the frame of a user message or request, with duplicates
// of files' descriptors in f.FDs: the caller closes them once the frame is
// queued (the queue holds its own duplicates). Without files it allocates
// nothing.
func userFrame(typ wire.Type, from, to int, data []byte, files []syscall.Conn, max int) (f wire.Frame, err error) {
	if len(data) > max {
		return f, fmt.Errorf("%w: %d bytes, the limit is %d", ErrTooLarge, len(data), max)
	}
	if len(files) > wire.MaxFDs {
		return f, fmt.Errorf("%w: %d files, the limit is %d", ErrTooLarge, len(files), wire.MaxFDs)
	}
	f = wire.Frame{Type: typ, From: uint32(from), To: uint32(int32(to)), Payload: data}
	for _, c := range files {
		fd, err := sockfd.DupFD(c)
		if err != nil {
			closeFDs(f.FDs)
			return wire.Frame{}, fmt.Errorf("prefork: file to send: %w", err)
		}
		f.FDs = append(f.FDs, fd)
	}
	return f, nil
}

// sendErr turns a wire error into the package's.
func sendErr(to int, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, wire.ErrQueueFull):
		return fmt.Errorf("%w: %s", ErrQueueFull, addrName(to))
	case errors.Is(err, wire.ErrTooLarge):
		return fmt.Errorf("%w: %v", ErrTooLarge, err)
	case errors.Is(err, wire.ErrClosed):
		return fmt.Errorf("%w: %s", ErrNoWorker, addrName(to))
	}
	return err
}

// encodeRoster and decodeRoster carry the live worker ids to every worker,
// so that a worker's Send to a dead id fails at once.
func encodeRoster(ids []int) []byte {
	b := make([]byte, 0, 4*len(ids))
	for _, id := range ids {
		b = binary.LittleEndian.AppendUint32(b, uint32(id))
	}
	return b
}

func decodeRoster(b []byte) map[int]bool {
	ids := make(map[int]bool, len(b)/4)
	for ; len(b) >= 4; b = b[4:] {
		ids[int(binary.LittleEndian.Uint32(b))] = true
	}
	return ids
}
