//go:build unix

package prefork

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/forkline/forkline/internal/wire"
)

// Descriptors a worker is started with (os/exec ExtraFiles).
const (
	fdChannel  = 3 // the worker's end of the socketpair to the parent
	fdListener = 4 // the worker's slot socket
)

// workerSide is the running worker: its channel to the parent and what
// travels on it.
type workerSide struct {
	cfg    Config
	id     int
	conn   *wire.Conn
	log    *slog.Logger
	reqs   requests
	resp   responder
	roster atomic.Pointer[map[int]bool] // the live worker ids, from the parent

	budget     int64 // requests (or connections) before a recycle; 0 = no limit
	served     atomic.Int64
	perRequest atomic.Bool // the server counts requests; the listener stops counting connections
	recycle    sync.Once
}

func (c *Cluster) runWorker(cfg Config, fn ServeFunc) error {
	conn, err := openChannel(cfg)
	if err != nil {
		// Started by hand with the worker variables set: say so in one
		// sentence and stop, rather than half-start.
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	wk := &workerSide{
		cfg:  cfg,
		id:   WorkerID(),
		conn: conn,
		log:  cfg.Logger.With("worker", WorkerID(), "pid", os.Getpid(), "gen", Generation()),
	}
	wk.resp.handler = cfg.OnRequest
	if cfg.MaxRequests > 0 {
		wk.budget = int64(cfg.MaxRequests)
		if cfg.MaxRequestsJitter > 0 {
			wk.budget += rand.Int64N(int64(cfg.MaxRequestsJitter) + 1)
		}
	}
	defer c.attach(nil, wk)()
	return wk.serve(fn, c.stop)
}

func (wk *workerSide) serve(fn ServeFunc, stop <-chan stopReq) error {
	conn := wk.conn
	if err := conn.SendControl(&wire.Frame{Type: wire.TypeHello, From: uint32(wk.id)}); err != nil {
		conn.Close()
		return err
	}
	ln, err := inheritedListener()
	if err != nil {
		conn.SendControl(&wire.Frame{Type: wire.TypeFailed, From: uint32(wk.id), Payload: []byte(err.Error())})
		conn.Close()
		return err
	}

	ctx, cancel := context.WithCancelCause(context.WithValue(context.Background(), workerKey{}, wk))
	defer cancel(nil)
	var closing atomic.Bool // the worker is closing its own channel
	parentGone := func() {
		cancel(errParentGone)
		time.AfterFunc(parentGoneGrace, func() {
			wk.log.Error("parent is gone and the drain is not done: exiting")
			os.Exit(1)
		})
	}

	// The channel reader: drain requests, liveness probes, messages, and
	// EOF when the parent dies.
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		for {
			f, err := conn.Recv()
			if err != nil {
				if !closing.Load() {
					wk.log.Warn("channel to parent closed: parent is gone, draining", "err", err)
					parentGone()
				}
				return
			}
			wk.onFrame(f, cancel)
		}
	}()

	// Signals: the parent speaks for the cluster, and workers run in process
	// groups of their own, so a ^C at a terminal does not reach them. Should
	// a HUP, INT, TTIN or TTOU reach a worker anyway, it is ignored. SIGTERM
	// (sent by systemd to the whole cgroup, or by Linux when the parent
	// dies) drains.
	signal.Ignore(syscall.SIGINT, syscall.SIGHUP, syscall.SIGTTIN, syscall.SIGTTOU)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM)
	sigDone := make(chan struct{})
	go func() {
		defer close(sigDone)
		select {
		case <-sigs:
			if unix.Getppid() != envInt(envParent) {
				parentGone()
			} else {
				// The parent asks for a drain over the channel; a signal
				// comes from elsewhere (an operator, systemd, Kill). Say
				// so, that the exit is not taken for a crash.
				conn.SendControl(&wire.Frame{Type: wire.TypeStopping, From: uint32(wk.id), Payload: []byte("SIGTERM")})
				cancel(errDrain)
			}
		case req := <-stop:
			if req.fast {
				os.Exit(1)
			}
			cancel(errDrain)
		case <-ctx.Done():
		}
	}()

	defer func() {
		signal.Stop(sigs)
		cancel(nil)
		<-sigDone
		closing.Store(true)
		wk.resp.wg.Wait()
		conn.Close()
		<-readerDone
		wk.reqs.fail(ErrNotRunning)
	}()

	// The worker is ready when its server first calls Accept: it is then
	// serving, not merely started (Node's "online" vs "listening").
	rl := &readyListener{TCPListener: ln, wk: wk}
	// On drain, Accept hands out what is queued, then fails (see ServeFunc).
	stopDrain := context.AfterFunc(ctx, rl.drain)
	defer stopDrain()
	err = fn(ctx, rl)
	ln.Close()
	if err != nil && ctx.Err() == nil {
		wk.log.Error("worker failed", "err", err)
		conn.SendControl(&wire.Frame{Type: wire.TypeFailed, From: uint32(wk.id), Payload: []byte(err.Error())})
		return err
	}
	return nil
}

// onFrame handles a frame from the parent, on the reader goroutine.
func (wk *workerSide) onFrame(f wire.Frame, cancel context.CancelCauseFunc) {
	switch f.Type {
	case wire.TypeDrain:
		cancel(errDrain)
	case wire.TypePing:
		wk.conn.SendControl(&wire.Frame{Type: wire.TypePong, From: uint32(wk.id), ID: f.ID})
	case wire.TypeRoster:
		roster := decodeRoster(f.Payload)
		wk.roster.Store(&roster)
	case wire.TypeUser:
		if wk.cfg.OnMessage != nil {
			wk.cfg.OnMessage(message(&f))
			return
		}
	case wire.TypeRequest:
		wk.resp.serve(f, wk.id, wk.conn)
		return
	case wire.TypeReply, wire.TypeReplyErr:
		wk.reqs.onReply(&f)
	}
	closeFDs(f.FDs)
}

// count counts one request (Run) or connection (Serve) and asks the
// parent for a replacement when the worker's budget is spent.
func (wk *workerSide) count() {
	if wk.budget > 0 && wk.served.Add(1) == wk.budget {
		wk.recycle.Do(func() {
			wk.log.Info("MaxRequests reached, asking for a replacement", "served", wk.budget)
			wk.conn.SendControl(&wire.Frame{Type: wire.TypeRecycle, From: uint32(wk.id)})
		})
	}
}

// check says whether this worker can address to.
func (wk *workerSide) check(to int) error {
	switch {
	case to == wk.id:
		return errors.New("prefork: a worker cannot send to itself")
	case to == Parent || to == All:
		return nil
	}
	if roster := wk.roster.Load(); roster == nil || !(*roster)[to] {
		return fmt.Errorf("%w: %s", ErrNoWorker, addrName(to))
	}
	return nil
}

func (wk *workerSide) send(to int, data []byte, files []syscall.Conn) error {
	if err := wk.check(to); err != nil {
		return err
	}
	f, err := userFrame(wire.TypeUser, wk.id, to, data, files, wk.cfg.MaxMessageSize)
	if err != nil {
		return err
	}
	err = sendErr(to, wk.conn.Send(&f))
	closeFDs(f.FDs)
	return err
}

func (wk *workerSide) request(ctx context.Context, to int, data []byte) ([]byte, error) {
	if to == All {
		return nil, errors.New("prefork: a request goes to one process, not All")
	}
	if err := wk.check(to); err != nil {
		return nil, err
	}
	f, err := userFrame(wire.TypeRequest, wk.id, to, data, nil, wk.cfg.MaxMessageSize)
	if err != nil {
		return nil, err
	}
	return wk.reqs.do(ctx, func(id uint64) error {
		f.ID = id
		return sendErr(to, wk.conn.SendDirect(&f))
	})
}

// workerKey is the context key of the running worker, for serveHTTP.
type workerKey struct{}

// countRequests returns the function a server calls once per request, or
// nil when no budget applies. Once called, the listener stops counting
// connections: requests are the better measure.
func countRequests(ctx context.Context) func() {
	wk, _ := ctx.Value(workerKey{}).(*workerSide)
	if wk == nil || wk.budget == 0 {
		return nil
	}
	wk.served.Store(0)
	wk.perRequest.Store(true)
	return wk.count
}

// openChannel returns the channel to the parent, after checking that there
// is one: the recorded parent is this process's parent, and descriptor 3 is
// a unix stream socket.
func openChannel(cfg Config) (*wire.Conn, error) {
	ppid := envInt(envParent)
	if ppid == 0 || unix.Getppid() != ppid {
		return nil, ErrNoParent
	}
	typ, err := unix.GetsockoptInt(fdChannel, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil || typ != unix.SOCK_STREAM {
		return nil, ErrNoParent
	}
	if sa, err := unix.Getsockname(fdChannel); err != nil {
		return nil, ErrNoParent
	} else if _, ok := sa.(*unix.SockaddrUnix); !ok {
		return nil, ErrNoParent
	}
	unix.CloseOnExec(fdChannel)
	return wire.NewConn(os.NewFile(fdChannel, "forkline-channel"), wire.Options{MaxPayload: cfg.MaxMessageSize})
}

// inheritedListener returns the slot socket the parent handed over.
func inheritedListener() (*net.TCPListener, error) {
	unix.CloseOnExec(fdListener)
	f := os.NewFile(fdListener, "forkline-listener")
	defer f.Close()
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("prefork: worker listener: %w", err)
	}
	tl, ok := ln.(*net.TCPListener)
	if !ok {
		ln.Close()
		return nil, fmt.Errorf("prefork: worker listener is a %T, not TCP", ln)
	}
	return tl, nil
}

// readyListener is the worker's *net.TCPListener, which says the worker is
// ready on the first call to Accept or AcceptTCP, and counts connections
// for MaxRequests when the server does not count requests. Every other
// method is the TCPListener's own.
type readyListener struct {
	*net.TCPListener
	wk       *workerSide
	once     sync.Once
	draining atomic.Bool
}

// drain ends accepting without abandoning the accept queue: Accept returns
// the connections already queued, then reports the listener closed. When
// this worker holds the socket's last copy (a scale-down, a shutdown),
// closing it resets whatever is still queued unless
// net.ipv4.tcp_migrate_req=1; emptying the queue first narrows that to the
// connections that arrive in between. The deadline wakes an Accept that is
// waiting; Go checks a deadline before it tries accept(2), so the queue is
// emptied with non-blocking accepts of our own.
func (l *readyListener) drain() {
	l.draining.Store(true)
	l.SetDeadline(time.Now())
}

// acceptQueued accepts one queued connection without waiting, or returns
// net.ErrClosed when the queue is empty.
func (l *readyListener) acceptQueued() (*net.TCPConn, error) {
	rc, err := l.SyscallConn()
	if err != nil {
		return nil, err
	}
	nfd := -1
	var aerr error
	err = rc.Control(func(fd uintptr) {
		syscall.ForkLock.RLock() // no fork between accept and close-on-exec
		nfd, _, aerr = unix.Accept(int(fd))
		if aerr == nil {
			unix.CloseOnExec(nfd)
		}
		syscall.ForkLock.RUnlock()
	})
	if err != nil || aerr != nil {
		return nil, net.ErrClosed // EAGAIN: the queue is empty
	}
	f := os.NewFile(uintptr(nfd), "forkline-drained-conn")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

func (l *readyListener) ready() {
	l.once.Do(func() {
		l.wk.conn.SendControl(&wire.Frame{Type: wire.TypeReady, From: uint32(l.wk.id), Payload: []byte(l.Addr().String())})
	})
}

func (l *readyListener) Accept() (net.Conn, error) {
	c, err := l.AcceptTCP()
	if err != nil {
		return nil, err // not a typed nil
	}
	return c, nil
}

func (l *readyListener) AcceptTCP() (*net.TCPConn, error) {
	l.ready()
	var c *net.TCPConn
	var err error
	if l.draining.Load() {
		c, err = l.acceptQueued()
	} else if c, err = l.TCPListener.AcceptTCP(); err != nil && l.draining.Load() {
		c, err = l.acceptQueued() // woken by drain's deadline
	}
	if err == nil && !l.wk.perRequest.Load() {
		l.wk.count()
	}
	return c, err
}
