// Command grpc serves gRPC under forkline: the standard health service
// (grpc.health.v1.Health) in every worker, each accepting from its own
// SO_REUSEPORT socket, with a drain that loses no RPC on a reload.
//
// Every answer carries the response header
//
//	forkline-worker: worker=<id> pid=<pid> gen=<generation>
//
// The health service is the one every gRPC deployment already speaks
// (grpc_health_probe, Kubernetes' gRPC probes, load balancers), and its
// generated code ships with grpc-go, so the example needs no protoc and no
// hand-written codec; who answered travels as metadata because its response
// has no field for it.
//
// This example has its own go.mod so that the root module does not depend on
// gRPC. Run it with:
//
//	cd examples/grpc
//	go build -o /tmp/forkline-grpc . && /tmp/forkline-grpc -addr 127.0.0.1:50051 -workers 2
//	grpcurl -plaintext -v 127.0.0.1:50051 grpc.health.v1.Health/Check
//	kill -HUP <parent pid>               # zero-downtime reload
//
// Build a binary and run that, rather than `go run`: workers are started by
// re-executing the parent's own executable.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/forkline/forkline/prefork"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
)

// WorkerHeader is the response header that says who answered.
const WorkerHeader = "forkline-worker"

func main() {
	var cfg prefork.Config
	flag.StringVar(&cfg.Addr, "addr", "127.0.0.1:50051", "address to serve on (port 0: a free one, logged by the parent)")
	flag.IntVar(&cfg.Workers, "workers", 0, "worker processes (0: one per CPU)")
	flag.DurationVar(&cfg.StopTimeout, "stop-timeout", prefork.DefaultStopTimeout, "how long a draining worker may take before it is killed")
	flag.Parse()
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))

	// The drain gives up a little before forkline would kill the worker, so
	// that a worker with a stuck RPC returns rather than dies.
	drain := cfg.StopTimeout
	if drain <= 0 {
		drain = prefork.DefaultStopTimeout
	}
	drain = drain * 9 / 10
	err := prefork.New(cfg).Serve(func(ctx context.Context, ln net.Listener) error {
		return serve(ctx, newServer(), ln, drain)
	})
	if err != nil {
		log.Fatal(err)
	}
}

// newServer returns a gRPC server with the health service, whose every
// answer names this worker in the WorkerHeader header.
func newServer() *grpc.Server {
	who := metadata.Pairs(WorkerHeader, fmt.Sprintf("worker=%d pid=%d gen=%d",
		prefork.WorkerID(), os.Getpid(), prefork.Generation()))
	s := grpc.NewServer(grpc.UnaryInterceptor(
		func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			grpc.SetHeader(ctx, who)
			return h(ctx, req)
		}))
	healthpb.RegisterHealthServer(s, health.NewServer())
	return s
}

// serve runs in each worker: it serves ln until ctx is cancelled, then
// drains without losing an RPC.
//
// The textbook drain,
//
//	go func() { <-ctx.Done(); s.GracefulStop() }()
//	return s.Serve(ln)
//
// calls GracefulStop as soon as ctx is cancelled, while Serve still runs
// (main_test.go measures it as serveTextbook). GracefulStop marks the
// server as quitting first, and grpc-go closes, without a word, every
// connection its accept loop hands over from then on (Server.handleRawConn
// checks for that before the HTTP/2 handshake): the connections forkline's
// listener hands out from the queue during the drain, which their clients
// had already opened, fail with "Unavailable ... EOF". So the drain goes in
// order:
//
//  1. Let the accept loop end. Once ctx is cancelled, forkline's listener
//     returns the connections still queued, then net.ErrClosed, so Serve
//     returns (with that error) and nothing is abandoned.
//  2. Wait until grpc has begun the handshake of every connection it
//     accepted: Serve hands each one to a goroutine of its own, and one that
//     has not run yet when step 3 begins sees the quit and closes its
//     connection just the same. (Without this wait, 1 to 16 of 16
//     connections queued at the drain were closed so, in every run of
//     TestDrainServesQueuedConnections.)
//  3. GracefulStop: every connection gets GOAWAY, the RPCs in flight finish,
//     and clients reconnect to the new generation on the same socket. Within
//     drain, then Stop cuts what is left.
func serve(ctx context.Context, s *grpc.Server, ln net.Listener, drain time.Duration) error {
	hl := &handshakeListener{Listener: ln}
	served := make(chan error, 1)
	go func() { served <- s.Serve(hl) }()
	select {
	case err := <-served:
		if ctx.Err() == nil {
			return err // Serve failed on its own, not because of a drain
		}
	case <-ctx.Done():
		<-served // net.ErrClosed, once the queue is handed out
	}

	dctx, cancel := context.WithTimeout(context.Background(), drain)
	defer cancel()
	hl.wait(dctx)
	stopped := make(chan struct{})
	go func() {
		s.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-dctx.Done():
		s.Stop() // out of time: close what is left (GracefulStop returns too)
		<-stopped
	}
	return nil
}

// handshakeListener counts the connections Serve accepted on which grpc has
// not begun its handshake yet.
type handshakeListener struct {
	net.Listener
	pending sync.WaitGroup
}

func (l *handshakeListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.pending.Add(1)
	return &handshakeConn{Conn: c, begun: sync.OnceFunc(l.pending.Done)}, nil
}

// wait returns once grpc has touched every accepted connection, or when
// ctx ends. It is called after Serve returned: no Accept adds to pending.
func (l *handshakeListener) wait(ctx context.Context) {
	done := make(chan struct{})
	go func() {
		l.pending.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// handshakeConn reports grpc's first call on the connection: SetDeadline
// comes right after its quit check, a Read or a Write with the handshake,
// Close when it gives the connection up.
type handshakeConn struct {
	net.Conn
	begun func()
}

func (c *handshakeConn) SetDeadline(t time.Time) error { c.begun(); return c.Conn.SetDeadline(t) }
func (c *handshakeConn) Read(p []byte) (int, error)    { c.begun(); return c.Conn.Read(p) }
func (c *handshakeConn) Write(p []byte) (int, error)   { c.begun(); return c.Conn.Write(p) }
func (c *handshakeConn) Close() error                  { c.begun(); return c.Conn.Close() }
