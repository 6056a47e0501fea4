package prefork

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
)

// Errors returned by the cluster.
var (
	// ErrServerClosed is returned by Run and Serve after Shutdown or Close.
	ErrServerClosed = errors.New("prefork: cluster closed")

	// ErrNoParent is the error of a process that has the worker environment
	// variables but no live channel to a forkline parent: it was started by
	// hand, not by its parent.
	ErrNoParent = errors.New("prefork: this process was started as a forkline worker but has no channel to a forkline parent; workers are started by their parent, so run the program without the FORKLINE_* environment variables")

	// ErrNotParent is returned by the parent-only methods (Reload) when they
	// are called in a worker.
	ErrNotParent = errors.New("prefork: only the parent process can do this")
)

// WorkerError is the failure of one worker: the error it reported over its
// channel, or how it exited when it could not say.
type WorkerError struct {
	ID  int   // the worker's slot, 1..Workers
	Gen int   // its generation
	PID int   // its process id
	Err error // its own cause
}

func (e *WorkerError) Error() string {
	return fmt.Sprintf("prefork: worker %d (pid %d, gen %d): %v", e.ID, e.PID, e.Gen, e.Err)
}

func (e *WorkerError) Unwrap() error { return e.Err }

// Environment variables by which a worker knows what it is. The parent sets
// them; a user never needs to.
const (
	envWorker     = "FORKLINE_WORKER"     // slot id, 1..N
	envGeneration = "FORKLINE_GENERATION" // 1, then +1 per reload
	envParent     = "FORKLINE_PARENT"     // the parent's pid
)

// IsWorker reports whether this process is a worker started by a forkline
// parent (Node's cluster.isWorker). Code before Run runs in the parent and
// in every worker; IsWorker tells them apart.
func IsWorker() bool { return os.Getenv(envWorker) != "" }

// WorkerID returns this worker's slot, from 1 to Config.Workers, or 0 in the
// parent. A replacement worker (after a crash, or in a reload) gets the slot
// of the worker it replaces, as einhorn's EINHORN_CHILD_INDEX does; unlike
// Node's cluster.worker.id, ids are reused.
func WorkerID() int { return envInt(envWorker) }

// Generation returns this worker's generation: 1 for the workers started
// with the parent, one more for each reload. It is 0 in the parent.
func Generation() int { return envInt(envGeneration) }

func envInt(name string) int {
	n, _ := strconv.Atoi(os.Getenv(name))
	return n
}

// A ServeFunc serves connections from ln in a worker. The worker counts as
// ready (serving) from the first call to ln.Accept. ctx is cancelled when
// the worker must drain: stop accepting, finish the work in flight, and
// return nil. ln is a *net.TCPListener underneath: its methods other than
// Accept are the TCPListener's. forkline closes ln after the function returns. An error
// returned while ctx is not cancelled is the worker's failure: it is
// reported to the parent, which replaces the worker (or, if no worker has
// become ready yet, stops and returns the error from Run).
type ServeFunc func(ctx context.Context, ln net.Listener) error

// Cluster is a prefork cluster: in the parent it supervises the workers, in a
// worker it serves. Create it with New. Its methods are safe for concurrent
// use.
type Cluster struct {
	cfg Config

	mu      sync.Mutex
	closed  bool            // Shutdown or Close was called
	started bool            // Serve was called
	stop    chan stopReq    // to the running supervisor or worker; nil before Run
	stopped chan struct{}   // closed when Run returns
	reload  chan reloadCall // to the running supervisor
}

type stopReq struct{ fast bool }

type reloadCall struct{ done chan error }

// New returns a cluster that runs with cfg. It does nothing until Run or
// Serve is called.
func New(cfg Config) *Cluster {
	return &Cluster{
		cfg:     cfg,
		stop:    make(chan stopReq, 2),
		stopped: make(chan struct{}),
		reload:  make(chan reloadCall),
	}
}

// Run serves h with every default: one worker per CPU on ":$PORT" or
// ":8080". It is New(Config{}).Run(h).
func Run(h http.Handler) error { return New(Config{}).Run(h) }

// Run serves h over HTTP/1.1 in every worker, with a drain that loses no
// request: on drain a worker stops accepting, answers the requests it has
// already accepted (with "Connection: close"), closes idle keep-alive
// connections, and exits. In the parent, Run supervises until a signal or
// Shutdown stops the cluster; see Serve.
func (c *Cluster) Run(h http.Handler) error {
	return c.Serve(serveHTTP(h, c.cfg.normalized().StopTimeout))
}

// Serve runs the cluster with fn as each worker's server.
//
// In the parent, Serve binds the listening sockets, starts the workers,
// replaces those that die, reloads on SIGHUP and stops on SIGTERM or SIGINT
// (see package signals for the table). It returns nil after a stop by
// signal, ErrServerClosed after Shutdown or Close, and an error when the
// cluster cannot start: a bad address, a port in use, or a worker that fails
// before any worker is ready (a *WorkerError carrying the worker's cause).
//
// In a worker, Serve calls fn with the worker's listener and returns when fn
// does. A Cluster runs once: Serve may not be called again.
func (c *Cluster) Serve(fn ServeFunc) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return ErrServerClosed
	}
	if c.started {
		c.mu.Unlock()
		return errors.New("prefork: Serve called twice on one Cluster")
	}
	c.started = true
	c.mu.Unlock()
	defer close(c.stopped)
	cfg := c.cfg.normalized()
	if err := cfg.check(); err != nil {
		return err
	}
	if IsWorker() {
		return runWorker(cfg, fn, c.stop)
	}
	return runParent(cfg, c.stop, c.reload)
}

// Shutdown stops the cluster gracefully: every worker stops accepting,
// finishes the requests in flight and exits (a worker still running after
// Config.StopTimeout is killed). Shutdown returns when Run has returned, or
// with ctx.Err() when ctx ends first. It can be called more than once and
// from any goroutine; Run then returns ErrServerClosed.
// In a worker, Shutdown drains this worker only; the parent replaces it.
func (c *Cluster) Shutdown(ctx context.Context) error {
	return c.halt(ctx, false)
}

// Close stops the cluster at once: workers are killed, requests in flight
// are lost. It returns when Run has returned. It can be called more than
// once; Run then returns ErrServerClosed.
func (c *Cluster) Close() error {
	return c.halt(context.Background(), true)
}

func (c *Cluster) halt(ctx context.Context, fast bool) error {
	c.mu.Lock()
	c.closed = true
	started := c.started
	c.mu.Unlock()
	if !started {
		return nil
	}
	select {
	case c.stop <- stopReq{fast: fast}:
	default: // a stop request is already pending
	}
	select {
	case <-c.stopped:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Reload starts a new generation of workers from the executable on disk,
// waits until every new worker is ready, then drains the old generation. If
// the new generation is not ready within Config.ReadyTimeout, or one of its
// workers fails, it is stopped and the old generation keeps serving; Reload
// then returns the cause. Reloads run one at a time; Reload waits for its
// turn. It returns ctx.Err() if ctx ends first (the reload itself goes on),
// and ErrNotParent in a worker.
func (c *Cluster) Reload(ctx context.Context) error {
	if IsWorker() {
		return ErrNotParent
	}
	call := reloadCall{done: make(chan error, 1)}
	select {
	case c.reload <- call:
	case <-c.stopped:
		return ErrServerClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-call.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}
