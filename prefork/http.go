package prefork

import (
	"context"
	"errors"
	"log"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/forkline/forkline/internal/worker"
)

// maxIdleGrace is how long, at most, a draining worker leaves an idle
// keep-alive connection open for its client to send one more request (which
// is answered with "Connection: close"). Closing an idle connection races
// with a request the client may be sending on it at that moment; a client in
// a request loop uses the grace at once, so most connections end cleanly.
const maxIdleGrace = time.Second

// parentGoneDrain bounds the drain of a worker whose parent died: within
// the grace after which the worker ends on its own (~500 ms).
const parentGoneDrain = 400 * time.Millisecond

// serveHTTP returns the ServeFunc behind Cluster.Run.
//
// http.Server.Shutdown alone was measured to fail connections that had been
// accepted but whose first request was not read yet (113-160 failed requests
// over 20 reloads of a busy worker). So the drain goes in stages: accept
// what is already queued and stop accepting (readyListener.drain), answer every
// request already accepted with "Connection: close", give idle keep-alive
// connections a short grace, and only then Shutdown.
func serveHTTP(h http.Handler, cfg Config) ServeFunc {
	return func(ctx context.Context, ln net.Listener) error {
		tr := &connTracker{changed: make(chan struct{}, 1)}
		count := worker.CountRequests(ctx)
		srv := &http.Server{
			ErrorLog: errorLog(ctx, cfg.Logger),
			Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tr.draining.Load() {
					w.Header().Set("Connection", "close")
				}
				if count != nil {
					count()
				}
				h.ServeHTTP(w, r)
			}),
			ConnState: tr.track,
		}
		errc := make(chan error, 1)
		go func() { errc <- srv.Serve(trackingListener{ln}) }()
		served := false
		select {
		case err := <-errc:
			if ctx.Err() == nil {
				return err // Serve failed on its own
			}
			served = true // the drain ended the accept loop first
		case <-ctx.Done():
		}

		// The worker's listener hands out what is queued once ctx is
		// done, then fails Accept: Serve returns with nothing abandoned.
		tr.draining.Store(true)
		if !served {
			<-errc
		}

		deadline := cfg.StopTimeout
		if errors.Is(context.Cause(ctx), worker.ErrParentGone) {
			deadline = parentGoneDrain
		}
		dctx, cancel := context.WithTimeout(context.Background(), deadline)
		defer cancel()
		tr.waitQuiet(dctx, min(maxIdleGrace, deadline/4))
		if err := srv.Shutdown(dctx); err != nil {
			srv.Close() // out of time: what is left is cut
		}
		return nil
	}
}

// errorLog sends the server's own log (a panic it recovered, a TLS
// handshake error) to the cluster's logger, with the worker's id.
func errorLog(ctx context.Context, l *slog.Logger) *log.Logger {
	if wl := worker.Log(ctx); wl != nil {
		l = wl
	}
	return slog.NewLogLogger(l.Handler(), slog.LevelError)
}

// connTracker follows every connection's state (http.Server.ConnState)
// with two counters and a state word in each connection, so that the
// request path pays a few atomic operations, not a lock and a map.
type connTracker struct {
	counts   [3]atomic.Int64 // by class: none, busy (new or active), idle
	draining atomic.Bool
	changed  chan struct{} // poked on every change while draining; capacity 1
}

const (
	classNone = iota
	classBusy
	classIdle
)

func class(st http.ConnState) int32 {
	switch st {
	case http.StateNew, http.StateActive:
		return classBusy
	case http.StateIdle:
		return classIdle
	}
	return classNone
}

// trackedConn is an accepted connection with its tracking class. The
// *net.TCPConn is embedded so that its other methods (ReadFrom for
// sendfile, CloseWrite) stay visible to net/http.
type trackedConn struct {
	*net.TCPConn
	class atomic.Int32
}

// trackingListener wraps each accepted TCP connection in a trackedConn.
type trackingListener struct{ net.Listener }

func (l trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		return &trackedConn{TCPConn: tc}, nil
	}
	return c, err
}

func (t *connTracker) track(c net.Conn, st http.ConnState) {
	tc, ok := c.(*trackedConn)
	if !ok {
		return
	}
	next := class(st)
	if prev := tc.class.Swap(next); prev != next {
		t.counts[prev].Add(-1)
		t.counts[next].Add(1)
	}
	if t.draining.Load() {
		select {
		case t.changed <- struct{}{}:
		default:
		}
	}
}

// busy counts the connections that are new (accepted, no request read yet)
// or active, and those that are idle.
func (t *connTracker) busy() (busy, idle int64) {
	return t.counts[classBusy].Load(), t.counts[classIdle].Load()
}

// waitQuiet returns when no connection is new or active and the idle ones
// have had grace to send a last request, or when ctx ends.
func (t *connTracker) waitQuiet(ctx context.Context, grace time.Duration) {
	graceEnd := time.NewTimer(grace)
	defer graceEnd.Stop()
	graceOver := false
	for {
		busy, idle := t.busy()
		if busy == 0 && (idle == 0 || graceOver) {
			return
		}
		select {
		case <-t.changed:
		case <-graceEnd.C:
			graceOver = true
		case <-ctx.Done():
			return
		}
	}
}
