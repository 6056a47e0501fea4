// Package worker is the worker's side of a forkline cluster: its identity,
// its channel to the parent, its listener, and how it drains. Package
// prefork is its public face.
package worker

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/forkline/forkline/internal/msg"
	"github.com/forkline/forkline/internal/wire"
)

// Errors of a worker (package prefork exports ErrNoParent).
var (
	// ErrNoParent: started with the worker variables but without a live
	// channel to a forkline parent.
	ErrNoParent = errors.New("prefork: this process was started as a forkline worker but has no channel to a forkline parent; workers are started by their parent, so run the program without the FORKLINE_* environment variables")
	// ErrDrain and ErrParentGone are the causes (context.Cause) of the
	// serving function's context: the parent asked, or it is gone.
	ErrDrain      = errors.New("prefork: drain requested")
	ErrParentGone = errors.New("prefork: parent process is gone")
)

// parentGoneGrace bounds how long a worker whose parent died may take to
// finish what it is doing: no worker outlives its parent by more than ~1 s.
const parentGoneGrace = 500 * time.Millisecond

// Config is what a worker runs with, normalised by package prefork.
type Config struct {
	MaxMessageSize    int
	StopTimeout       time.Duration
	MaxRequests       int
	MaxRequestsJitter int
	OnMessage         func(msg.Message)
	OnRequest         func(msg.Message) ([]byte, error)
	Logger            *slog.Logger
}

// Worker is the running worker.
type Worker struct {
	cfg     Config
	id      int
	conn    *wire.Conn
	log     *slog.Logger
	reqs    msg.Requests
	resp    msg.Responder
	roster  atomic.Pointer[map[int]bool] // the live worker ids, from the parent
	welcome wire.Welcome
	fds     []int // the welcome's descriptors, until Serve takes them

	budget     int64        // requests (or connections) before a recycle; 0 = no limit
	served     atomic.Int64 // requests (or connections) served, for the parent's Stats
	perRequest atomic.Bool  // the server counts requests; the listener stops counting connections
	recycle    sync.Once
	stopBeats  func()      // ends the heartbeat answers; nil without heartbeats
	lastCopy   atomic.Bool // the drain request said: yours is the socket's last copy
	eps        *endpoints  // the worker's sockets, once Serve has opened them
}

// Open connects to the parent: it reads the parent's welcome and answers
// with the limits it agrees to. It fails with ErrNoParent in a process that
// has the worker variables but no parent's channel.
func Open(cfg Config) (*Worker, error) {
	conn, f, err := openChannel(cfg.MaxMessageSize)
	if err != nil {
		return nil, err
	}
	welcome, err := wire.DecodeWelcome(f)
	if err != nil {
		wire.CloseFDs(f.FDs)
		conn.Close()
		return nil, err
	}
	wk := &Worker{cfg: cfg, id: self.id, conn: conn, welcome: welcome, fds: f.FDs,
		log: cfg.Logger.With("worker", self.id, "pid", os.Getpid(), "gen", self.gen)}
	wk.resp = msg.Responder{Handler: cfg.OnRequest, Log: wk.log}
	if cfg.MaxRequests > 0 {
		wk.budget = int64(cfg.MaxRequests)
		if cfg.MaxRequestsJitter > 0 {
			wk.budget += rand.Int64N(int64(cfg.MaxRequestsJitter) + 1)
		}
	}
	agreed := min(cfg.MaxMessageSize, welcome.MaxPayload)
	conn.SetSendLimit(agreed)
	if err := conn.SendControl(&wire.Frame{Type: wire.TypeHello, From: uint32(wk.id), Payload: wire.Hello{MaxPayload: agreed}.Encode()}); err != nil {
		wk.closeFDs()
		conn.Close()
		return nil, err
	}
	return wk, nil
}

func (wk *Worker) closeFDs() {
	wire.CloseFDs(wk.fds)
	wk.fds = nil
}

// ServeFunc serves the worker's main listener until its context is
// cancelled; PacketFunc, its main datagram socket.
type (
	ServeFunc  func(ctx context.Context, ln net.Listener) error
	PacketFunc func(ctx context.Context, pc net.PacketConn) error
)

// Serve calls fn with the worker's main listener and returns when fn
// does. stop is Shutdown (false) or Close (true) called in this worker.
func (wk *Worker) Serve(fn ServeFunc, stop <-chan bool) error {
	return wk.run(func(ctx context.Context, eps *endpoints) error {
		if eps.ls[0] == nil {
			return fmt.Errorf("prefork: the cluster's address %s is %s: serve it with ServePacket", eps.addr(0), eps.network(0))
		}
		return fn(ctx, eps.ls[0])
	}, stop)
}

// ServePacket calls fn with the worker's main datagram socket.
func (wk *Worker) ServePacket(fn PacketFunc, stop <-chan bool) error {
	return wk.run(func(ctx context.Context, eps *endpoints) error {
		if eps.pcs[0] == nil {
			return fmt.Errorf("prefork: the cluster's address %s is %s: serve it with Serve or Run", eps.addr(0), eps.network(0))
		}
		return fn(ctx, eps.pcs[0])
	}, stop)
}

func (wk *Worker) run(fn func(context.Context, *endpoints) error, stop <-chan bool) error {
	defer wk.conn.Close()
	eps, err := wk.openEndpoints()
	if err != nil {
		wk.failed(err)
		return err
	}
	wk.eps = eps
	ctx, cancel := context.WithCancelCause(context.WithValue(context.Background(), workerKey{}, wk))
	defer cancel(nil)
	var closing atomic.Bool // this worker closes its own channel
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		wk.read(cancel, &closing)
	}()
	signalsDone := wk.watchSignals(ctx, cancel, stop)
	defer func() {
		cancel(nil)
		<-signalsDone
		closing.Store(true)
		wk.resp.Wait()
		if wk.stopBeats != nil {
			wk.stopBeats()
		}
		wk.conn.Close()
		<-readerDone
		wk.reqs.Fail(errors.New("prefork: the worker has stopped"))
	}()

	// On drain, Accept hands out what is queued, then fails (see ServeFunc).
	stopDrain := context.AfterFunc(ctx, eps.drain)
	defer stopDrain()
	err = fn(ctx, eps)
	eps.close()
	switch {
	case err != nil && ctx.Err() == nil:
		wk.log.Error("worker failed", "err", err)
		wk.failed(err)
		return err
	case ctx.Err() == nil:
		// Not a failure the parent can tell from a crash but by this line.
		wk.log.Warn("the serving function returned before its drain was asked: the worker exits and the parent replaces it; serve until the context is done")
	}
	return nil
}

func (wk *Worker) failed(err error) {
	wk.conn.SendControl(&wire.Frame{Type: wire.TypeFailed, From: uint32(wk.id), Payload: []byte(err.Error())})
}

// read is the channel's reader: drain requests, the roster, messages and
// replies, and EOF when the parent dies.
func (wk *Worker) read(cancel context.CancelCauseFunc, closing *atomic.Bool) {
	for {
		f, err := wk.conn.Recv()
		if err != nil {
			if !closing.Load() {
				wk.log.Warn("channel to parent closed: parent is gone, draining", "err", err)
				wk.reqs.Fail(fmt.Errorf("%w: %s", msg.ErrNoWorker, "the parent is gone"))
				wk.parentGone(cancel)
			}
			return
		}
		wk.onFrame(f, cancel)
	}
}

func (wk *Worker) onFrame(f wire.Frame, cancel context.CancelCauseFunc) {
	switch f.Type {
	case wire.TypeDrain:
		if len(f.Payload) > 0 && f.Payload[0] == wire.DrainLast[0] {
			wk.lastCopy.Store(true)
		}
		cancel(ErrDrain)
	case wire.TypeRoster:
		roster := msg.DecodeRoster(f.Payload)
		wk.roster.Store(&roster)
	case wire.TypeUser:
		if wk.cfg.OnMessage != nil {
			msg.Deliver(wk.log, int(f.From), wk.cfg.OnMessage, msg.FromFrame(&f))
			return
		}
	case wire.TypeRequest:
		wk.resp.Serve(f, wk.id, sender{wk.conn})
		return
	case wire.TypeReply, wire.TypeReplyErr:
		wk.reqs.OnReply(&f)
	case wire.TypeCount:
		out := wire.Frame{Type: wire.TypeReply, From: uint32(wk.id), To: f.From, ID: f.ID,
			Payload: binary.LittleEndian.AppendUint64(nil, uint64(wk.served.Load()))}
		wk.conn.SendControl(&out)
	}
	wire.CloseFDs(f.FDs)
}

// parentGone drains because the parent died, and ends the process if the
// drain is not done within parentGoneGrace: its socket is the last copy,
// and what it has not accepted when it exits is lost. When the service
// manager keeps a copy of every socket, the queue waits for the next
// parent, and the drain has StopTimeout to finish what is in flight.
func (wk *Worker) parentGone(cancel context.CancelCauseFunc) {
	wk.lastCopy.Store(!wk.welcome.Kept)
	cancel(ErrParentGone)
	grace := parentGoneGrace
	if wk.welcome.Kept {
		grace = max(grace, wk.cfg.StopTimeout)
	}
	time.AfterFunc(grace, func() {
		wk.log.Error("parent is gone and the drain is not done: exiting")
		Exit(1)
	})
}

// Exit ends the worker process at once. It is the library's one os.Exit:
// a worker whose parent is gone and whose drain did not finish in time,
// and Close called in a worker, end here.
func Exit(code int) { os.Exit(code) }

// sender is the channel as msg.Sender.
type sender struct{ *wire.Conn }

func (s sender) SendDirect(f wire.Frame) error  { return s.Conn.SendDirect(&f) }
func (s sender) SendControl(f wire.Frame) error { return s.Conn.SendControl(&f) }
