package worker

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/forkline/forkline/internal/wire"
)

// rawListener is what a worker's listener is made of: a *net.TCPListener
// or a *net.UnixListener.
type rawListener interface {
	net.Listener
	SetDeadline(time.Time) error
	SyscallConn() (syscall.RawConn, error)
}

// listener is a worker's listener. The main one says the worker is ready
// on the first call to Accept, and counts connections for MaxRequests
// when the server does not count requests. TCPListener gives the socket
// under it, for its options.
type listener struct {
	rawListener
	wk       *Worker
	main     bool
	once     sync.Once
	draining atomic.Bool

	mu   sync.Mutex
	held []net.Conn // the queue, taken at a last-copy drain, for Accept

	drained   chan struct{} // closed by drain
	drainOnce sync.Once
}

// drain ends accepting without abandoning the accept queue: Accept returns
// the connections already queued, then reports the listener closed.
//
// When this worker's copy of the socket is the last (a scale-down, a stop,
// the parent's death), closing it resets whatever is still queued unless
// net.ipv4.tcp_migrate_req=1, and until it is closed the kernel keeps
// queueing new connections on it. So the queue is taken whole first, at
// at once, and the socket stops listening right after (takeQueue): only a
// connection that arrives in those microseconds is lost, where accepting
// one at a time while the server answers the first ones (and their clients
// come back) kept the socket listening for the whole drain. Otherwise (a reload, a recycle: the
// parent and the successor hold the socket) Accept takes what is queued one
// at a time and what is left stays for the successor.
//
// The deadline, or the close, wakes an Accept that is waiting; Go checks a
// deadline before it tries accept(2), so the queue is taken with
// non-blocking accepts of our own.
func (l *listener) drain() {
	defer l.drainOnce.Do(func() { close(l.drained) })
	if l.wk.lastCopy.Load() {
		l.mu.Lock()
		l.held = takeQueue(l.rawListener)
		l.mu.Unlock()
	}
	l.draining.Store(true)
	l.SetDeadline(time.Now())
}

// next returns a connection of the drained queue, or net.ErrClosed.
func (l *listener) next() (net.Conn, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.held) > 0 {
		c := l.held[0]
		l.held = l.held[1:]
		return c, nil
	}
	if l.wk.lastCopy.Load() {
		return nil, net.ErrClosed
	}
	return acceptQueued(l.rawListener)
}

// Close closes the listener and what it took of the queue and nobody
// accepted (a server that stopped calling Accept).
func (l *listener) Close() error {
	l.mu.Lock()
	held := l.held
	l.held = nil
	l.mu.Unlock()
	if len(held) > 0 {
		l.wk.log.Warn("the serving function returned without accepting the connections queued at its drain: they are closed unanswered; let the accept loop end (Accept fails once the queue is handed out) before shutting the server down, as prefork.ServeHTTP does",
			"addr", l.Addr().String(), "connections", len(held))
	}
	for _, c := range held {
		c.Close()
	}
	return l.rawListener.Close()
}

// TCPListener returns the *net.TCPListener under l, if it is one.
func (l *listener) TCPListener() (*net.TCPListener, bool) {
	tl, ok := l.rawListener.(*net.TCPListener)
	return tl, ok
}

func (l *listener) ready() {
	if !l.main {
		return
	}
	// Without steering, a slot that had no worker for a while stopped
	// listening (the parent's fallback): its worker makes it listen again
	// as it starts to accept.
	if err := ensureListening(l.rawListener); err != nil {
		l.wk.log.Error("cannot make the slot's socket listen again", "err", err)
	}
	l.wk.conn.SendControl(&wire.Frame{Type: wire.TypeReady, From: uint32(l.wk.id), Payload: []byte(l.Addr().String())})
}

func (l *listener) Accept() (net.Conn, error) {
	l.once.Do(l.ready)
	var c net.Conn
	var err error
	if l.draining.Load() {
		c, err = l.next()
	} else if c, err = l.rawListener.Accept(); err != nil && (l.draining.Load() || l.wk.lastCopy.Load()) {
		c, err = l.next() // woken by the drain
	} else if err != nil && errors.Is(err, syscall.EINVAL) {
		// The socket stopped listening under this worker: another worker
		// of the slot, holding its last copy at a stop, took the queue and
		// shut it. The parent's drain request is on its way: wait for it
		// rather than fail the server.
		<-l.drained
		c, err = l.next()
	}
	if err != nil {
		return nil, err // not a typed nil
	}
	if l.main && !l.wk.perRequest.Load() {
		l.wk.count()
	}
	return c, nil
}

// count counts one request (Run) or connection (Serve), for the parent's
// Stats, and asks the parent for a replacement when the worker's budget is
// spent.
func (wk *Worker) count() {
	if n := wk.served.Add(1); wk.budget > 0 && n == wk.budget {
		wk.recycle.Do(func() {
			wk.log.Info("MaxRequests reached, asking for a replacement", "served", wk.budget)
			wk.conn.SendControl(&wire.Frame{Type: wire.TypeRecycle, From: uint32(wk.id)})
		})
	}
}

// workerKey is the context key of the running worker, for CountRequests.
type workerKey struct{}

// CountRequests returns the function a server calls once per request, or
// nil outside a worker. Once called, the listener stops counting
// connections: requests are the better measure.
func CountRequests(ctx context.Context) func() {
	wk, _ := ctx.Value(workerKey{}).(*Worker)
	if wk == nil {
		return nil
	}
	wk.served.Store(0)
	wk.perRequest.Store(true)
	return wk.count
}

// StopTimeout returns the worker's Config.StopTimeout, or 0 outside a
// worker's serving function.
func StopTimeout(ctx context.Context) time.Duration {
	wk, _ := ctx.Value(workerKey{}).(*Worker)
	if wk == nil {
		return 0
	}
	return wk.cfg.StopTimeout
}

// Log returns the worker's logger (its records carry worker, pid and gen),
// or nil outside a worker's serving function.
func Log(ctx context.Context) *slog.Logger {
	wk, _ := ctx.Value(workerKey{}).(*Worker)
	if wk == nil {
		return nil
	}
	return wk.log
}
