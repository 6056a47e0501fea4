package prefork

import (
	"context"
	"crypto/tls"
	"errors"
	"log"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/forkline/forkline/internal/worker"
)

// Defaults of the http.Server that Run serves a handler with. Idle and slow
// clients cannot hold a worker (or, in a reload, a whole generation) past
// its drain anyway: see ServeHTTP.
const (
	// DefaultReadHeaderTimeout bounds how long a client may take to send a
	// request's headers (a slowloris client is cut then).
	DefaultReadHeaderTimeout = 10 * time.Second
	// DefaultIdleTimeout closes a keep-alive connection idle for this long.
	DefaultIdleTimeout = 2 * time.Minute
)

// maxIdleGrace is how long, at most, a draining worker leaves a connection
// that has no request in flight for its client: an idle keep-alive
// connection gets that long to send one more request (answered with
// "Connection: close"), and a new one that long to send its first, after
// which it is closed. Closing an idle connection races with a request the
// client may be sending on it at that moment; a client in a request loop
// uses the grace at once, so it ends cleanly.
const maxIdleGrace = time.Second

// parentGoneDrain bounds the drain of a worker whose parent died: within
// the grace after which the worker ends on its own (~500 ms).
const parentGoneDrain = 400 * time.Millisecond

// Run serves h over HTTP/1.1 in every worker with the drain of ServeHTTP
// and the server's safe defaults: DefaultReadHeaderTimeout and
// DefaultIdleTimeout. In the parent, Run supervises until a signal or
// Shutdown stops the cluster; see Serve.
func (c *Cluster) Run(h http.Handler) error {
	return c.RunServer(&http.Server{Handler: h, ReadHeaderTimeout: DefaultReadHeaderTimeout, IdleTimeout: DefaultIdleTimeout})
}

// RunServer serves srv in every worker, on the cluster's address, with the
// drain of ServeHTTP: its handler, timeouts, TLSConfig (HTTPS, and HTTP/2
// where its NextProtos allow), Protocols (h2c with SetUnencryptedHTTP2),
// BaseContext and ConnContext are the user's; timeouts left zero stay zero.
// In the parent, RunServer supervises, as Serve does. srv is not used
// otherwise: build it in code that runs in every process, before
// RunServer.
func (c *Cluster) RunServer(srv *http.Server) error {
	return c.Serve(func(ctx context.Context, ln net.Listener) error { return ServeHTTP(ctx, ln, srv) })
}

// RunServerTLS is RunServer over HTTPS with the certificate and key read
// from the files, as http.Server.ServeTLS reads them. Every worker reads
// them when it starts, so a reload picks up a renewed certificate. Other
// settings come from srv.TLSConfig if it is set.
func (c *Cluster) RunServerTLS(srv *http.Server, certFile, keyFile string) error {
	return c.Serve(func(ctx context.Context, ln net.Listener) error {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return err
		}
		cfg := &tls.Config{}
		if srv.TLSConfig != nil {
			cfg = srv.TLSConfig.Clone()
		}
		cfg.Certificates = append(cfg.Certificates, cert)
		srv.TLSConfig = cfg
		return ServeHTTP(ctx, ln, srv)
	})
}

// ServeHTTP serves srv on ln until ctx is done, then drains without losing
// a request, and returns once every connection is done (or at the worker's
// StopTimeout, when what is left is cut). It is Run's drain, for a
// ServeFunc that serves HTTP beside something else, or on a listener of its
// own (Listener):
//
//  1. forkline's listener hands out the connections already queued, then
//     fails, and srv's accept loop ends: nothing queued is abandoned;
//  2. every request in flight or to come is answered with
//     "Connection: close" (HTTP/1; HTTP/2 clients get a GOAWAY at step 4);
//  3. a connection with no request in flight gets maxIdleGrace (1 s) to
//     send one: an idle keep-alive client its next, a new client its first;
//     a new one that has not sent a complete request by then is closed, so
//     that idle or slow clients cannot hold a drain;
//  4. then srv.Shutdown, which waits for what is still active.
//
// (http.Server.Shutdown alone closes, unanswered, a connection whose first
// request it has not read yet: measured, 113-160 failed requests over 20
// reloads of a busy worker.)
//
// ServeHTTP serves TLS when srv.TLSConfig has a certificate (Certificates,
// GetCertificate or GetConfigForClient): pass forkline's listener, not one
// wrapped with tls.NewListener, so that the drain sees every connection.
// It sets srv's ConnState (calling srv's own first) and wraps its Handler,
// and sets ErrorLog, when it is nil, to the cluster's Logger with the
// worker's id: srv must not be served by anything else.
func ServeHTTP(ctx context.Context, ln net.Listener, srv *http.Server) error {
	d := newDrainer(ctx, srv)
	errc := make(chan error, 1)
	go func() { errc <- d.serve(srv, trackingListener{ln}) }()
	served := false
	select {
	case err := <-errc:
		if ctx.Err() == nil {
			return err // the server failed on its own
		}
		served = true // the drain ended the accept loop first
	case <-ctx.Done():
	}
	deadline := worker.StopTimeout(ctx)
	if deadline <= 0 {
		deadline = DefaultStopTimeout
	}
	if errors.Is(context.Cause(ctx), worker.ErrParentGone) {
		deadline = parentGoneDrain
	}
	grace := min(maxIdleGrace, deadline/4)
	d.tr.drain(grace)
	if !served {
		<-errc // the listener hands out what is queued, then fails
	}
	dctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	d.tr.waitQuiet(dctx, grace)
	if err := srv.Shutdown(dctx); err != nil {
		srv.Close() // out of time: what is left is cut
	}
	return nil
}

// drainer is ServeHTTP's hold on a server.
type drainer struct {
	tr  *connTracker
	tls bool
}

func newDrainer(ctx context.Context, srv *http.Server) *drainer {
	d := &drainer{tr: newConnTracker()}
	if c := srv.TLSConfig; c != nil && (len(c.Certificates) > 0 || c.GetCertificate != nil || c.GetConfigForClient != nil) {
		d.tls = true
	}
	h := srv.Handler
	if h == nil {
		h = http.DefaultServeMux
	}
	count := worker.CountRequests(ctx)
	srv.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if d.tr.draining.Load() && r.ProtoMajor == 1 {
			w.Header().Set("Connection", "close")
		}
		if count != nil {
			count()
		}
		h.ServeHTTP(w, r)
	})
	user := srv.ConnState
	srv.ConnState = func(c net.Conn, st http.ConnState) {
		if user != nil {
			user(c, st)
		}
		d.tr.track(c, st)
	}
	if srv.ErrorLog == nil {
		srv.ErrorLog = errorLog(ctx)
	}
	return d
}

func (d *drainer) serve(srv *http.Server, ln net.Listener) error {
	if d.tls {
		return srv.ServeTLS(ln, "", "")
	}
	return srv.Serve(ln)
}

// errorLog sends the server's own log (a panic it recovered, a TLS
// handshake error) to the cluster's logger, with the worker's id.
func errorLog(ctx context.Context) *log.Logger {
	l := worker.Log(ctx)
	if l == nil {
		l = slog.Default()
	}
	return slog.NewLogLogger(l.Handler(), slog.LevelError)
}
