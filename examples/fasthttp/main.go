// Command fasthttp is the hello server of examples/hello served by
// github.com/valyala/fasthttp instead of net/http, under forkline.
//
// forkline starts -workers copies of this binary; each one listens on -addr
// with its own SO_REUSEPORT socket, and the kernel spreads connections across
// them. The parent only supervises: it never accepts a connection. Every
// request is answered with 200 and
//
//	Hello from worker=<id> pid=<pid> gen=<generation>
//
// On SIGTERM or SIGINT (and for the old workers, on a SIGHUP reload) each
// worker stops accepting, lets the requests in flight finish (then fasthttp's
// Server.ShutdownWithContext, all bounded by -stop-timeout) and exits; on a
// stop, the parent then exits 0.
//
// This example has its own go.mod so that the root module does not depend on
// fasthttp. Run it with:
//
//	cd examples/fasthttp
//	go build -o /tmp/hello-fasthttp . && /tmp/hello-fasthttp -addr 127.0.0.1:8080 -workers 2
//	curl http://127.0.0.1:8080/
//
// Build a binary and run that, rather than `go run`: workers are started by
// re-executing the parent's own executable.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"net"
	"os"
	"sync/atomic"
	"time"

	"github.com/forkline/forkline/prefork"
	"github.com/valyala/fasthttp"
)

func main() {
	var cfg prefork.Config
	flag.StringVar(&cfg.Addr, "addr", "127.0.0.1:8080", "address to serve on")
	flag.IntVar(&cfg.Workers, "workers", 0, "worker processes (0: one per CPU)")
	flag.TextVar(&cfg.Mode, "mode", prefork.ModeAuto, "how workers get their socket: auto, reuseport or inherit")
	flag.DurationVar(&cfg.StopTimeout, "stop-timeout", prefork.DefaultStopTimeout, "how long a draining worker may take before it is killed")
	flag.DurationVar(&cfg.ReadyTimeout, "ready-timeout", prefork.DefaultReadyTimeout, "how long a new worker may take to become ready (at start, after a crash, in a reload)")
	verbose := flag.Bool("v", false, "log every worker event")
	flag.Parse()

	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	// The drain gives up a little before forkline would kill the worker, so
	// a worker with a stuck connection returns rather than dies.
	drain := cfg.StopTimeout
	if drain <= 0 {
		drain = prefork.DefaultStopTimeout
	}
	drain = drain * 9 / 10
	err := prefork.New(cfg).Serve(func(ctx context.Context, ln net.Listener) error {
		return serve(ctx, ln, drain)
	})
	if err != nil {
		log.Fatal(err)
	}
}

// maxIdleGrace bounds how long a drain waits for keep-alive clients to
// send one more request (answered with "Connection: close") before the
// connections still open are closed by fasthttp's shutdown.
const maxIdleGrace = time.Second

// serve runs in each worker. It serves ln until ctx is cancelled, then drains.
//
// fasthttp's ShutdownWithContext alone closes every keep-alive connection
// that is idle at that instant, which races with a client that is sending
// its next request on it: under wrk, two reloads failed 70 requests that
// way. So the drain goes in stages, as forkline's own net/http drain does:
// stop accepting once the queue is empty (forkline's listener does that when
// ctx is cancelled), answer every further request with "Connection: close"
// so that clients leave by themselves, wait until they have, and only then
// shut down.
//
// The connections are counted with fasthttp's ConnState hook, not
// Server.GetOpenConnectionsCount: that one subtracts the accept loop's own
// count while the server is not shutting down, so once Serve has returned it
// reports one connection too few. Waiting while it was above 0 ended the
// wait with one connection still open, which the shutdown then closed under
// its client's next request (1-5 requests lost per 10 reloads under 24
// keep-alive clients, one per drain that ended that way).
func serve(ctx context.Context, ln net.Listener, drain time.Duration) error {
	body := fmt.Appendf(nil, "Hello from worker=%d pid=%d gen=%d\n",
		prefork.WorkerID(), os.Getpid(), prefork.Generation())

	var draining atomic.Bool
	open := &openConns{changed: make(chan struct{}, 1)}
	srv := &fasthttp.Server{
		Handler: func(rc *fasthttp.RequestCtx) {
			if draining.Load() {
				rc.SetConnectionClose()
			}
			rc.SetContentType("text/plain; charset=utf-8")
			rc.SetBody(body)
		},
		ConnState: open.track,
		// Also "Connection: close" on what is answered during the shutdown.
		CloseOnShutdown: true,
	}

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	// Stop accepting. Once ctx is cancelled, forkline's listener hands out
	// the connections already queued and then fails Accept, so Serve returns
	// without abandoning the queue; the connections it accepted are still
	// served by fasthttp's worker goroutines.
	var err error
	select {
	case err = <-served:
		if ctx.Err() == nil {
			return err // Serve failed on its own, not because of a drain
		}
	case <-ctx.Done():
		draining.Store(true)
		err = <-served
	}
	draining.Store(true)
	if err != nil {
		return fmt.Errorf("fasthttp: %w", err)
	}

	dctx, cancel := context.WithTimeout(context.Background(), drain)
	defer cancel()

	// Give keep-alive clients a moment to take their "Connection: close"
	// and leave: a client in a request loop does at once.
	gctx, gcancel := context.WithTimeout(dctx, min(maxIdleGrace, drain/4))
	open.waitClosed(gctx)
	gcancel()

	// Close what is still idle and wait for what is active, within drain.
	if err := srv.ShutdownWithContext(dctx); err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("fasthttp drain: %w", err)
	}
	return nil
}

// openConns counts the server's open connections (its ConnState hook) and
// says when the count changes.
type openConns struct {
	n       atomic.Int64
	changed chan struct{} // poked on every change; capacity 1
}

func (o *openConns) track(_ net.Conn, st fasthttp.ConnState) {
	switch st {
	case fasthttp.StateNew:
		o.n.Add(1)
	case fasthttp.StateClosed, fasthttp.StateHijacked: // one of them ends each connection
		o.n.Add(-1)
	default:
		return
	}
	select {
	case o.changed <- struct{}{}:
	default:
	}
}

// waitClosed returns when no connection is open, or when ctx ends.
func (o *openConns) waitClosed(ctx context.Context) {
	for o.n.Load() > 0 {
		select {
		case <-o.changed:
		case <-ctx.Done():
			return
		}
	}
}
