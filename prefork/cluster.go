package prefork

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"

	"github.com/forkline/forkline/internal/supervisor"
	"github.com/forkline/forkline/internal/worker"
)

// Errors returned by the cluster.
var (
	// ErrServerClosed is returned by Run and Serve after Shutdown or Close.
	ErrServerClosed = supervisor.ErrClosed

	// ErrNoParent is returned by Run and Serve in a process that has the
	// worker environment variables but no live channel to a forkline
	// parent: it was started by hand, not by its parent. Its text says so
	// in one sentence, for the log.Fatal that follows.
	ErrNoParent = worker.ErrNoParent

	// ErrNotParent is returned by the parent-only methods (Reload, Kill,
	// Disconnect, SetWorkers) when they are called in a worker.
	ErrNotParent = errors.New("prefork: only the parent process can do this")

	// ErrNotRunning is returned by the methods that need a running cluster
	// before Run or Serve has started it, or after it has stopped.
	ErrNotRunning = errors.New("prefork: cluster is not running")
)

// WorkerError is the failure of one worker: the error it reported over its
// channel, or how it exited when it could not say (with the first line of
// its panic, when it panicked).
type WorkerError struct {
	ID  int   // the worker's slot, 1..Workers
	Gen int   // its generation
	PID int   // its process id; 0 when it could not be started at all
	Err error // its own cause
}

func (e *WorkerError) Error() string {
	return (&supervisor.WorkerError{ID: e.ID, Gen: e.Gen, PID: e.PID, Err: e.Err}).Error()
}

func (e *WorkerError) Unwrap() error { return e.Err }

// publicErr gives a supervisor's worker error the public type.
func publicErr(err error) error {
	if we, ok := err.(*supervisor.WorkerError); ok {
		return &WorkerError{ID: we.ID, Gen: we.Gen, PID: we.PID, Err: we.Err}
	}
	return err
}

// IsWorker reports whether this process is a worker started by a forkline
// parent (Node's cluster.isWorker). Code before Run runs in the parent and
// in every worker; IsWorker tells them apart.
func IsWorker() bool { return worker.IsWorker() }

// WorkerID returns this worker's slot, from 1 to Config.Workers, or 0 in the
// parent. A replacement worker (after a crash, or in a reload) gets the slot
// of the worker it replaces, as einhorn's EINHORN_CHILD_INDEX does; unlike
// Node's cluster.worker.id, ids are reused.
func WorkerID() int { return worker.ID() }

// Generation returns this worker's generation: 1 for the workers started
// with the parent, one more for each reload. It is 0 in the parent.
func Generation() int { return worker.Gen() }

// A ServeFunc serves connections from ln in a worker. The worker counts as
// ready (serving) from the first call to ln.Accept. ctx is cancelled when
// the worker must drain: stop accepting, finish the work in flight, and
// return nil. From then on ln.Accept returns the connections already queued
// and then net.ErrClosed, so that a server that lets its accept loop end
// before it shuts down gets them even when this worker holds the socket's
// last copy (a scale-down, a shutdown). It must then serve them: note that
// net/http's Server.Shutdown closes, unanswered, a connection whose first
// request it has not read yet; Run waits for those before it shuts down. ln
// is a *net.TCPListener underneath: its methods other than Accept are the
// TCPListener's. forkline closes ln after the function returns. An error
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
	closed  bool                // Shutdown or Close was called
	started bool                // Serve was called
	role    role                // the running parent or worker, while it runs
	stop    chan bool           // Shutdown (false) and Close (true) to a running worker
	stopped chan struct{}       // closed when Serve returns
	command *supervisor.Command // RunCommand's program, if that is what runs

	// Test hooks (export_test.go): the tests' own starter, a parent
	// that leaves GOMAXPROCS alone (tests run parents side by side), and
	// variables for its workers' environment.
	testStart     supervisor.Starter
	testKeepProcs bool
	testEnv       []string
}

func (c *Cluster) testStarter() supervisor.Starter { return c.testStart }

// role is what a running cluster is in this process: a *supervisor.Supervisor
// in the parent, a *worker.Worker in a worker. The parent-only methods ask
// for the first.
type role interface {
	Send(to int, data []byte, files []syscall.Conn) error
	Request(ctx context.Context, to int, data []byte) ([]byte, error)
}

// New returns a cluster that runs with cfg. It does nothing until Run or
// Serve is called.
func New(cfg Config) *Cluster {
	return &Cluster{cfg: cfg, stop: make(chan bool, 1), stopped: make(chan struct{})}
}

// Run serves h with every default: one worker per CPU on ":$PORT" or
// ":8080". It is New(Config{}).Run(h).
func Run(h http.Handler) error { return New(Config{}).Run(h) }

// Serve runs the cluster with fn as each worker's server.
//
// In the parent, Serve checks the Config (an invalid value is an error
// naming the field), binds the listening sockets, starts the workers,
// replaces those that die, reloads on SIGHUP and stops on SIGTERM or SIGINT
// (see package signals for the table). It returns nil after a stop by
// signal, ErrServerClosed after Shutdown or Close, and an error when the
// cluster cannot start: a bad address, a port in use, or a worker that fails
// before every worker was ready once (a *WorkerError carrying the worker's
// cause).
//
// In a worker, Serve calls fn with the worker's listener and returns when fn
// does; it returns ErrNoParent in a process started by hand with the
// worker variables. A Cluster runs once: Serve may not be called again.
func (c *Cluster) Serve(fn ServeFunc) error {
	return c.serve(false, func(cfg Config) error { return c.runWorker(cfg, fn) })
}

// serve runs the cluster: the parent, or in a worker, work; packet says
// that work serves a datagram address.
func (c *Cluster) serve(packet bool, work func(Config) error) error {
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
	if err := c.cfg.check(); err != nil {
		return err
	}
	cfg := c.cfg.normalized()
	if udp := strings.HasPrefix(cfg.Network, "udp"); udp != packet {
		if udp {
			return fmt.Errorf("prefork: the cluster's address %s is %s: serve it with ServePacket", cfg.Addr, cfg.Network)
		}
		return fmt.Errorf("prefork: ServePacket needs a udp address, not %s %s", cfg.Network, cfg.Addr)
	}
	if IsWorker() {
		return work(cfg)
	}
	return c.runParent(cfg)
}

// Shutdown stops the cluster gracefully: every worker stops accepting,
// finishes the requests in flight and exits (a worker still running after
// Config.StopTimeout is killed). Shutdown returns when Run has returned, or
// with ctx.Err() when ctx ends first. It can be called more than once and
// from any goroutine; Run then returns ErrServerClosed.
// In a worker, Shutdown drains this worker only; the parent replaces it.
func (c *Cluster) Shutdown(ctx context.Context) error { return c.halt(ctx, false) }

// Close stops the cluster at once: workers are killed, requests in flight
// are lost. It returns when Run has returned. It can be called more than
// once; Run then returns ErrServerClosed. In a worker, Close ends the
// worker's process at once (exit status 1).
func (c *Cluster) Close() error { return c.halt(context.Background(), true) }

func (c *Cluster) halt(ctx context.Context, fast bool) error {
	c.mu.Lock()
	c.closed = true
	started, r := c.started, c.role
	if s, ok := r.(*supervisor.Supervisor); ok {
		c.mu.Unlock()
		s.Stop(fast)
	} else {
		select {
		case c.stop <- fast: // the worker takes it, or attach for the parent
		default: // a stop request is already pending
		}
		c.mu.Unlock()
	}
	if !started {
		return nil
	}
	select {
	case <-c.stopped:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// attach makes the running parent or worker reachable through c's methods;
// the function it returns detaches it. A stop requested before the parent
// ran is applied now.
func (c *Cluster) attach(r role) (detach func()) {
	c.mu.Lock()
	c.role = r
	s, parent := r.(*supervisor.Supervisor)
	pending, fast := false, false
	if parent {
		select {
		case fast = <-c.stop:
			pending = true
		default:
		}
	}
	c.mu.Unlock()
	if pending {
		s.Stop(fast)
	}
	return func() {
		c.mu.Lock()
		c.role = nil
		c.mu.Unlock()
	}
}

func (c *Cluster) running() (role, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.role == nil {
		return nil, ErrNotRunning
	}
	return c.role, nil
}

// parent returns the running supervisor, or why there is none.
func (c *Cluster) parent() (*supervisor.Supervisor, error) {
	if IsWorker() {
		return nil, ErrNotParent
	}
	r, err := c.running()
	if err != nil {
		return nil, err
	}
	return r.(*supervisor.Supervisor), nil
}

// Reload starts a new generation of workers from the executable on disk,
// waits until every new worker is ready, then drains the old generation. If
// the new generation is not ready within Config.ReadyTimeout, or one of its
// workers fails, it is stopped and the old generation keeps serving; Reload
// then returns the cause. Reloads run one at a time: one requested while
// another runs (or before the cluster is first ready) waits for it, and
// every request made meanwhile joins that next one. Reload returns
// ctx.Err() if ctx ends first (the reload itself goes on), and
// ErrNotParent in a worker.
func (c *Cluster) Reload(ctx context.Context) error {
	s, err := c.parent()
	if err != nil {
		return err
	}
	return publicErr(s.Reload(ctx))
}

// Send sends data, and duplicates of files' descriptors, to another process
// of the cluster: Parent, a worker's id, or All. From a worker, a message to
// another worker is relayed by the parent. Messages from one sender to one
// recipient arrive in order, to the recipient's Config.OnMessage. Send does
// not wait for delivery: it fails with ErrNoWorker when the recipient is not
// alive, ErrQueueFull when its queue is full, and ErrTooLarge for a payload
// over the channel's limit (the lower of the two sides' MaxMessageSize).
// While the parent's queue to a worker is full, the parent holds back
// messages relayed to it, and their senders' Send reports ErrQueueFull in
// turn; only a worker that reads nothing for a second (a quarter of
// HeartbeatTimeout, if less) has messages relayed to it dropped, which the
// parent logs, until it reads again. files may be *os.File, *net.TCPConn,
// *net.TCPListener or any syscall.Conn; the caller keeps its own copies.
func (c *Cluster) Send(to int, data []byte, files ...syscall.Conn) error {
	r, err := c.running()
	if err != nil {
		return err
	}
	return r.Send(to, data, files)
}

// SendJSON sends v, marshalled as JSON, as Send does.
func (c *Cluster) SendJSON(to int, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return c.Send(to, data)
}

// Request sends data to Parent or a worker's id and waits for the answer of
// the recipient's Config.OnRequest, or until ctx is done (then it returns
// ctx.Err(); a late answer is dropped). The recipient's error comes back as
// an error with its text, as does an answer the recipient could not send
// (one larger than the limit, say), a panic in its OnRequest, and its exit
// before it answered: a Request never outlives its recipient.
func (c *Cluster) Request(ctx context.Context, to int, data []byte) ([]byte, error) {
	r, err := c.running()
	if err != nil {
		return nil, err
	}
	return r.Request(ctx, to, data)
}

// Workers returns a snapshot of the live workers, by id then generation.
// In a worker it returns nil.
func (c *Cluster) Workers() []WorkerInfo {
	s, err := c.parent()
	if err != nil {
		return nil
	}
	var infos []WorkerInfo
	for _, in := range s.Workers() {
		infos = append(infos, infoOf(in))
	}
	return infos
}

// Kill sends sig to the serving worker of slot id. A worker that dies of it
// is replaced, as after a crash; use Disconnect to stop one for good.
func (c *Cluster) Kill(id int, sig os.Signal) error {
	s, err := c.parent()
	if err != nil {
		return err
	}
	return s.Kill(id, sig)
}

// Disconnect drains the serving worker of slot id (it stops accepting,
// finishes what is in flight, and exits) and leaves the slot empty: it is
// not refilled until the next Reload or SetWorkers (Node's
// worker.disconnect). Connections queued on the slot's socket wait there.
func (c *Cluster) Disconnect(id int) error {
	s, err := c.parent()
	if err != nil {
		return err
	}
	return s.Disconnect(id)
}

// SetWorkers changes the number of worker slots to n (at least 1): new
// slots get a socket and a worker; removed slots (the highest ids) close
// their socket and drain their worker; slots emptied by Disconnect get a
// worker again. SIGTTIN and SIGTTOU do the same by one. During a reload
// (or before the cluster is first ready) the change waits for it, and
// SetWorkers returns at once.
func (c *Cluster) SetWorkers(n int) error {
	s, err := c.parent()
	if err != nil {
		return err
	}
	return s.SetWorkers(n)
}

// Upgrade re-executes the parent in place from the executable on disk
// (SIGUSR2 does the same): the same pid, the same workers, sockets and
// channels, adopted by the new binary (Linux). The new binary must first
// pass a check (run with a variable that makes it print the state version it
// reads); if it does not, or if the cluster stops meanwhile, Upgrade
// returns why and this parent carries on. A new parent that cannot adopt
// the state gives it back to the old executable, which carries on. When the
// upgrade succeeds, this process image is gone: Upgrade does not return,
// and the new parent's EventUpgraded says so. ErrNotParent in a worker.
func (c *Cluster) Upgrade(ctx context.Context) error {
	s, err := c.parent()
	if err != nil {
		return err
	}
	return s.Upgrade(ctx)
}
