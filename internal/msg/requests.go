package msg

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"

	"github.com/forkline/forkline/internal/wire"
)

// Requests keeps one process's requests that wait for a reply. The zero
// value is ready to use.
type Requests struct {
	mu      sync.Mutex
	next    uint64
	pending map[uint64]pending
	closed  error // set once the channel is gone: new requests fail with it
}

type pending struct {
	ch     chan reply
	target any // whom it was sent to, for FailTarget
}

type reply struct {
	data []byte
	err  error
}

// Do sends a request with send, which gets the request's id, and waits
// for its reply, for ctx, or for FailTarget(target) or Fail.
func (r *Requests) Do(ctx context.Context, target any, send func(id uint64) error) ([]byte, error) {
	ch := make(chan reply, 1)
	r.mu.Lock()
	if r.closed != nil {
		r.mu.Unlock()
		return nil, r.closed
	}
	if r.pending == nil {
		r.pending = make(map[uint64]pending)
	}
	r.next++
	id := r.next
	r.pending[id] = pending{ch, target}
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
func (r *Requests) complete(id uint64, rep reply) {
	r.mu.Lock()
	p, ok := r.pending[id]
	delete(r.pending, id)
	r.mu.Unlock()
	if ok {
		p.ch <- rep
	}
}

// FailTarget ends with err the requests that wait for target: it is gone
// and will not answer.
func (r *Requests) FailTarget(target any, err error) {
	r.mu.Lock()
	var ids []uint64
	for id, p := range r.pending {
		if p.target == target {
			ids = append(ids, id)
		}
	}
	r.mu.Unlock()
	for _, id := range ids {
		r.complete(id, reply{err: err})
	}
}

// Fail ends every waiting request, and every later one, with err.
func (r *Requests) Fail(err error) {
	r.mu.Lock()
	r.closed = err
	pending := r.pending
	r.pending = nil
	r.mu.Unlock()
	for _, p := range pending {
		p.ch <- reply{err: err}
	}
}

// OnReply completes a request from a reply frame.
func (r *Requests) OnReply(f *wire.Frame) {
	rep := reply{data: f.Payload}
	if f.Type == wire.TypeReplyErr {
		rep = reply{err: fmt.Errorf("prefork: request to %s failed: %s", AddrName(int(f.From)), f.Payload)}
	}
	r.complete(f.ID, rep)
}

// Responder runs request handlers, each in a goroutine of its own (a
// handler may itself send a request); Wait waits for them.
type Responder struct {
	wg      sync.WaitGroup
	Handler func(Message) ([]byte, error)
	Log     *slog.Logger // where a handler's panic is logged
}

// Sender is where a reply goes: the channel the request came on. Frames
// go by value (a pointer handed to an interface method escapes).
type Sender interface {
	SendDirect(wire.Frame) error
	SendControl(wire.Frame) error
}

// Serve answers the request f on ch, as self.
func (rs *Responder) Serve(f wire.Frame, self int, ch Sender) {
	rs.wg.Go(func() {
		out := &wire.Frame{Type: wire.TypeReply, From: uint32(self), To: f.From, ID: f.ID}
		if rs.Handler == nil {
			wire.CloseFDs(f.FDs)
			out.Type, out.Payload = wire.TypeReplyErr, []byte(AddrName(self)+" has no OnRequest handler")
		} else if data, err := rs.call(f); err != nil {
			out.Type, out.Payload = wire.TypeReplyErr, []byte(err.Error())
		} else {
			out.Payload = data
		}
		err := ch.SendDirect(*out)
		if err == nil || errors.Is(err, wire.ErrClosed) {
			return // a requester that has gone away does not need it
		}
		// The reply is too large, or the queue is full: rather than leave
		// the requester waiting for its deadline, say why. Control frames
		// skip the queue bound, and this one is small.
		ch.SendControl(wire.Frame{
			Type: wire.TypeReplyErr, From: out.From, To: out.To, ID: out.ID,
			Payload: []byte("the reply could not be sent: " + SendErr(int(f.From), err).Error()),
		})
	})
}

// call runs the handler; a panic in it is the request's error, not the
// process's end.
func (rs *Responder) call(f wire.Frame) (data []byte, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("OnRequest panicked: %v", p)
			log := rs.Log
			if log == nil {
				log = slog.Default()
			}
			logPanic(log.With("from", f.From), "OnRequest", p)
		}
	}()
	return rs.Handler(FromFrame(&f))
}

// Wait waits for the handlers that are running.
func (rs *Responder) Wait() { rs.wg.Wait() }

// Deliver calls onMessage with m; a panic in it is logged (with the
// sender's address) and the message counts as delivered. It reports whether
// the handler returned normally.
func Deliver(log *slog.Logger, from int, onMessage func(Message), m Message) (ok bool) {
	defer func() {
		if p := recover(); p != nil {
			if log == nil {
				log = slog.Default()
			}
			logPanic(log.With("from", from), "OnMessage", p)
			ok = false
		}
	}()
	onMessage(m)
	return true
}

func logPanic(log *slog.Logger, where string, p any) {
	if log == nil {
		log = slog.Default()
	}
	log.Error(where+" panicked; the process carries on", "err", fmt.Sprint(p), "stack", string(debug.Stack()))
}
