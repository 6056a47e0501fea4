package supervisor

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/forkline/forkline/internal/msg"
	"github.com/forkline/forkline/internal/wire"
)

// Messages do not go through the loop: each worker's reader goroutine
// routes that worker's user frames itself, against a copy-on-write table of
// the serving workers that the loop publishes when it changes.

// publishRoutes makes the serving workers that said hello the targets of
// messages, and tells every worker who is alive.
func (s *Supervisor) publishRoutes() {
	s.routesDirty = false
	routes := make(map[int]*worker, len(s.slots))
	ids := make([]int, 0, len(s.slots))
	for _, sl := range s.slots {
		if w := sl.cur; w != nil && (w.state == Online || w.state == Listening) {
			routes[sl.id] = w
			ids = append(ids, sl.id)
		}
	}
	s.routes.Store(&routes)
	roster := msg.EncodeRoster(ids)
	for w := range s.workers {
		if w.state == Online || w.state == Listening {
			w.ch.SendControl(wire.Frame{Type: wire.TypeRoster, To: uint32(w.id), Payload: roster})
		}
	}
}

// route delivers or relays a user frame from a worker, on its reader.
func (s *Supervisor) route(from *worker, f wire.Frame) {
	defer func() { wire.CloseFDs(f.FDs) }() // every Send queued duplicates of its own
	f.From = uint32(from.id)
	to := int(int32(f.To))
	if to == msg.Parent {
		s.toParent(from, &f)
		return
	}
	routes := *s.routes.Load()
	if to == msg.All {
		for id, w := range routes {
			if id != from.id {
				if err := s.relaySend(w, &f, false); err != nil {
					s.drop(from.id, id, msg.SendErr(id, err))
				}
			}
		}
		return
	}
	w := routes[to]
	var err error
	switch {
	case w == nil:
		err = fmt.Errorf("%w: %s", msg.ErrNoWorker, msg.AddrName(to))
	case f.Type == wire.TypeRequest:
		w.relays.add(from, f.ID)
		if err = msg.SendErr(to, s.relaySend(w, &f, true)); err != nil {
			w.relays.done(from.id, f.ID)
		}
	default:
		if f.Type == wire.TypeReply || f.Type == wire.TypeReplyErr {
			from.relays.done(to, f.ID)
		}
		// A message is batched with the sender's stream; a reply is
		// written at once: latency first.
		err = msg.SendErr(to, s.relaySend(w, &f, f.Type != wire.TypeUser))
	}
	if err == nil {
		s.counts.relayed.Add(1)
		return
	}
	if f.Type == wire.TypeRequest {
		from.ch.SendControl(wire.Frame{Type: wire.TypeReplyErr, From: uint32(to), To: f.From, ID: f.ID, Payload: []byte(err.Error())})
		return
	}
	s.drop(from.id, to, err)
}

// toParent hands a worker's message, request or reply to the parent's side.
func (s *Supervisor) toParent(from *worker, f *wire.Frame) {
	switch f.Type {
	case wire.TypeUser:
		if s.cfg.OnMessage != nil {
			m := msg.FromFrame(f)
			f.FDs = nil // the message's files own them now
			msg.Deliver(s.log, from.id, s.cfg.OnMessage, m)
		}
	case wire.TypeRequest:
		s.resp.Serve(*f, msg.Parent, from.ch)
		f.FDs = nil // the handler's message owns them
	case wire.TypeReply, wire.TypeReplyErr:
		s.reqs.OnReply(f)
	}
}

// relaySend queues a relayed frame for w (direct: see wire.Conn.SendDirect).
// While w's queue is full it waits for room, for relayWait at most, and
// meanwhile this goroutine, the sender's reader, reads nothing more from the
// sender: the sender's own queue fills in turn and its Send reports
// ErrQueueFull. So a full queue is an error to the sender of a relayed
// message as it is to a direct one, and nothing its Send accepted is
// dropped, unless the recipient takes nothing for all of relayWait.
//
// A recipient that took nothing for relayWait is marked stuck: until it has
// room again, what is relayed to it is dropped at once, so that it holds
// back its senders for one relayWait, not one per message.
func (s *Supervisor) relaySend(w *worker, f *wire.Frame, direct bool) error {
	var err error
	if direct {
		err = w.ch.SendDirect(*f)
	} else {
		err = w.ch.Send(*f)
	}
	if err == nil {
		if w.relayStuck.Load() {
			w.relayStuck.Store(false)
		}
		return nil
	}
	if !errors.Is(err, wire.ErrQueueFull) || w.relayStuck.Load() {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.relayWait)
	defer cancel()
	if err = w.ch.SendWait(ctx, *f); errors.Is(err, wire.ErrQueueFull) {
		w.relayStuck.Store(true)
	}
	return err
}

// drop counts a relayed message that could not be delivered (the recipient
// is gone, or took nothing for relayWait) and logs the count at most once a
// second: a flood to a worker that does not read must not become a flood of
// log lines.
func (s *Supervisor) drop(from, to int, err error) {
	s.counts.dropped.Add(1)
	n := s.dropped.Add(1)
	now := time.Now().UnixNano()
	last := s.dropLogged.Load()
	if now-last < int64(time.Second) || !s.dropLogged.CompareAndSwap(last, now) {
		return
	}
	s.dropped.Add(-n)
	s.log.Warn("relayed messages dropped: the recipient is gone, or has read nothing for "+s.relayWait.String(), "dropped", n, "from", from, "to", to, "err", err)
}

// relayed keeps the requests relayed to a worker that wait for its answer,
// so that its requesters learn at once when it exits without answering.
type relayed struct {
	mu sync.Mutex
	m  map[relayKey]*worker
}

type relayKey struct {
	from int
	id   uint64
}

func (r *relayed) add(from *worker, id uint64) {
	r.mu.Lock()
	if r.m == nil {
		r.m = make(map[relayKey]*worker)
	}
	r.m[relayKey{from.id, id}] = from
	r.mu.Unlock()
}

func (r *relayed) done(from int, id uint64) {
	r.mu.Lock()
	delete(r.m, relayKey{from, id})
	r.mu.Unlock()
}

// failRelayed answers, with an error, the requests relayed to w that it
// did not answer before it exited.
func (s *Supervisor) failRelayed(w *worker) {
	w.relays.mu.Lock()
	m := w.relays.m
	w.relays.m = nil
	w.relays.mu.Unlock()
	text := []byte(msg.AddrName(w.id) + " exited before it answered")
	for k, from := range m {
		from.ch.SendControl(wire.Frame{Type: wire.TypeReplyErr, From: uint32(w.id), To: uint32(k.from), ID: k.id, Payload: text})
	}
}
