package worker

import (
	"context"
	"errors"
	"fmt"
	"syscall"

	"github.com/forkline/forkline/internal/msg"
	"github.com/forkline/forkline/internal/wire"
)

// check says whether this worker can address to.
func (wk *Worker) check(to int) error {
	switch {
	case to == wk.id:
		return errors.New("prefork: a worker cannot send to itself")
	case to == msg.Parent || to == msg.All:
		return nil
	}
	if roster := wk.roster.Load(); roster == nil || !(*roster)[to] {
		return fmt.Errorf("%w: %s", msg.ErrNoWorker, msg.AddrName(to))
	}
	return nil
}

// Send sends a message to the parent, a worker (relayed) or All.
func (wk *Worker) Send(to int, data []byte, files []syscall.Conn) error {
	if err := wk.check(to); err != nil {
		return err
	}
	f, err := msg.NewFrame(wire.TypeUser, wk.id, to, data, files, wk.conn.SendLimit())
	if err != nil {
		return err
	}
	err = msg.SendErr(to, wk.conn.Send(&f))
	wire.CloseFDs(f.FDs)
	return err
}

// Request sends a request to the parent or a worker and waits for the
// answer, for ctx, or for the channel's end.
func (wk *Worker) Request(ctx context.Context, to int, data []byte) ([]byte, error) {
	if to == msg.All {
		return nil, errors.New("prefork: a request goes to one process, not All")
	}
	if err := wk.check(to); err != nil {
		return nil, err
	}
	f, err := msg.NewFrame(wire.TypeRequest, wk.id, to, data, nil, wk.conn.SendLimit())
	if err != nil {
		return nil, err
	}
	return wk.reqs.Do(ctx, nil, func(id uint64) error {
		f.ID = id
		return msg.SendErr(to, wk.conn.SendDirect(&f))
	})
}
