//go:build unix

package prefork

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"syscall"
	"time"

	"github.com/forkline/forkline/internal/wire"
)

// The parent's side of messaging: routing worker traffic (on the workers'
// reader goroutines), and the Cluster methods that address workers.

// publishRoutes makes the serving workers the targets of messages, and
// tells every worker who is alive.
func (s *supervisor) publishRoutes() {
	s.routesDirty = false
	routes := make(map[int]*worker, len(s.slots))
	ids := make([]int, 0, len(s.slots))
	for _, sl := range s.slots {
		if sl.cur != nil {
			routes[sl.id] = sl.cur
			ids = append(ids, sl.id)
		}
	}
	s.routes.Store(&routes)
	roster := encodeRoster(ids)
	for w := range s.workers {
		if w.state != stateDraining {
			w.conn.SendControl(&wire.Frame{Type: wire.TypeRoster, To: uint32(w.id), Payload: roster})
		}
	}
}

func (s *supervisor) route(from *worker, f wire.Frame) {
	defer func() { closeFDs(f.FDs) }() // every Send queued duplicates of its own
	f.From = uint32(from.id)
	to := int(int32(f.To))
	if to == Parent {
		switch f.Type {
		case wire.TypeUser:
			if s.cfg.OnMessage != nil {
				m := message(&f)
				f.FDs = nil // the message's files own them now
				s.cfg.OnMessage(m)
			}
		case wire.TypeRequest:
			s.resp.serve(f, Parent, from.conn)
			f.FDs = nil // the handler's message owns them
		case wire.TypeReply, wire.TypeReplyErr:
			s.reqs.onReply(&f)
		}
		return
	}
	routes := *s.routes.Load()
	if to == All {
		for id, w := range routes {
			if id != from.id {
				if err := s.relaySend(w, &f, false); err != nil {
					s.drop(from.id, id, sendErr(id, err))
				}
			}
		}
		return
	}
	var err error
	if w := routes[to]; w == nil {
		err = fmt.Errorf("%w: %s", ErrNoWorker, addrName(to))
	} else {
		// A message is batched with the sender's stream; a request or a
		// reply is written at once: latency first.
		err = sendErr(to, s.relaySend(w, &f, f.Type != wire.TypeUser))
	}
	if err == nil {
		return
	}
	if f.Type == wire.TypeRequest {
		from.conn.SendControl(&wire.Frame{Type: wire.TypeReplyErr, From: uint32(to), To: f.From, ID: f.ID, Payload: []byte(err.Error())})
		return
	}
	s.drop(from.id, to, err)
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
func (s *supervisor) relaySend(w *worker, f *wire.Frame, direct bool) error {
	var err error
	if direct {
		err = w.conn.SendDirect(f)
	} else {
		err = w.conn.Send(f)
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
	if err = w.conn.SendWait(ctx, f); errors.Is(err, wire.ErrQueueFull) {
		w.relayStuck.Store(true)
	}
	return err
}

// drop counts a relayed message that could not be delivered (the recipient
// is gone, or took nothing for relayWait) and logs the count at most once a
// second: a flood to a worker that does not read must not become a flood of
// log lines.
func (s *supervisor) drop(from, to int, err error) {
	n := s.dropped.Add(1)
	now := time.Now().UnixNano()
	last := s.dropLogged.Load()
	if now-last < int64(time.Second) || !s.dropLogged.CompareAndSwap(last, now) {
		return
	}
	s.dropped.Add(-n)
	s.log.Warn("relayed messages dropped: the recipient is gone, or has read nothing for "+s.relayWait.String(), "dropped", n, "from", from, "to", to, "err", err)
}

// send and request are Cluster.Send and Cluster.Request in the parent.
func (s *supervisor) send(to int, data []byte, files []syscall.Conn) error {
	if to == Parent {
		return errors.New("prefork: the parent cannot send to itself")
	}
	f, err := userFrame(wire.TypeUser, Parent, to, data, files, s.cfg.MaxMessageSize)
	if err != nil {
		return err
	}
	defer closeFDs(f.FDs)
	routes := *s.routes.Load()
	if to == All {
		var errs []error
		for id, w := range routes {
			if err := w.conn.Send(&f); err != nil {
				errs = append(errs, sendErr(id, err))
			}
		}
		return errors.Join(errs...)
	}
	w := routes[to]
	if w == nil {
		return fmt.Errorf("%w: %s", ErrNoWorker, addrName(to))
	}
	return sendErr(to, w.conn.Send(&f))
}

func (s *supervisor) request(ctx context.Context, to int, data []byte) ([]byte, error) {
	if to == Parent || to == All {
		return nil, fmt.Errorf("prefork: the parent can only send requests to one worker, not %s", addrName(to))
	}
	f, err := userFrame(wire.TypeRequest, Parent, to, data, nil, s.cfg.MaxMessageSize)
	if err != nil {
		return nil, err
	}
	return s.reqs.do(ctx, func(id uint64) error {
		w := (*s.routes.Load())[to]
		if w == nil {
			return fmt.Errorf("%w: %s", ErrNoWorker, addrName(to))
		}
		f.ID = id
		return sendErr(to, w.conn.SendDirect(&f))
	})
}

func (s *supervisor) snapshot() []WorkerInfo {
	var infos []WorkerInfo
	s.do(func() error {
		for w := range s.workers {
			infos = append(infos, w.info(stateNames[w.state]))
		}
		return nil
	})
	slices.SortFunc(infos, func(a, b WorkerInfo) int {
		return cmp.Or(cmp.Compare(a.ID, b.ID), cmp.Compare(a.Gen, b.Gen))
	})
	return infos
}

func (s *supervisor) kill(id int, sig os.Signal) error {
	return s.do(func() error {
		if id < 1 || id > len(s.slots) || s.slots[id-1].cur == nil {
			return fmt.Errorf("%w: %s", ErrNoWorker, addrName(id))
		}
		return s.slots[id-1].cur.cmd.Process.Signal(sig)
	})
}

func (s *supervisor) disconnect(id int) error {
	return s.do(func() error {
		if id < 1 || id > len(s.slots) || s.slots[id-1].cur == nil {
			return fmt.Errorf("%w: %s", ErrNoWorker, addrName(id))
		}
		sl := s.slots[id-1]
		w := sl.cur
		sl.cur = nil
		s.routesDirty = true
		s.drain(w)
		return nil
	})
}
