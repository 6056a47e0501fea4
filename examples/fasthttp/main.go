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
// On SIGTERM or SIGINT each worker stops accepting, lets the requests in
// flight finish (fasthttp's Server.ShutdownWithContext, bounded by
// -stop-timeout) and exits; then the parent exits 0.
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

	// The drain is bounded by the same timeout after which forkline kills the
	// worker, so a worker with a stuck connection returns rather than dies.
	drain := cfg.StopTimeout
	if drain <= 0 {
		drain = prefork.DefaultStopTimeout
	}
	err := prefork.New(cfg).Serve(func(ctx context.Context, ln net.Listener) error {
		return serve(ctx, ln, drain)
	})
	if err != nil {
		log.Fatal(err)
	}
}

// serve runs in each worker. It serves ln until ctx is cancelled, then drains.
func serve(ctx context.Context, ln net.Listener, drain time.Duration) error {
	body := fmt.Appendf(nil, "Hello from worker=%d pid=%d gen=%d\n",
		prefork.WorkerID(), os.Getpid(), prefork.Generation())

	srv := &fasthttp.Server{
		Handler: func(rc *fasthttp.RequestCtx) {
			rc.SetContentType("text/plain; charset=utf-8")
			rc.SetBody(body)
		},
		// While draining, answer with "Connection: close" so keep-alive
		// clients move to another worker. Idle keep-alive connections need no
		// IdleTimeout to end a drain: ShutdownWithContext closes them.
		CloseOnShutdown: true,
	}

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	select {
	case err := <-served:
		// Serve failed on its own (not because of a drain).
		return err
	case <-ctx.Done():
	}

	// ShutdownWithContext closes the listener (Serve then returns nil) and
	// waits until the connections in flight are done or sctx expires. The
	// listener is forkline's: it closes ln again after we return, which is
	// harmless.
	sctx, cancel := context.WithTimeout(context.Background(), drain)
	defer cancel()
	err := srv.ShutdownWithContext(sctx)
	if serr := <-served; serr != nil && !errors.Is(serr, net.ErrClosed) {
		err = errors.Join(err, serr)
	}
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("fasthttp drain: %w", err)
	}
	return nil
}
