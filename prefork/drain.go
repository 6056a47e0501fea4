package prefork

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// connTracker follows every connection's state (http.Server.ConnState)
// for ServeHTTP's drain. Per request it costs a few atomic operations on
// the connection's own word (no lock, no map); only a new connection is
// entered in a set, until its first request, so that the drain can give
// those that have sent nothing a deadline.
type connTracker struct {
	counts   [3]atomic.Int64 // by class: none, busy (new or active), idle
	draining atomic.Bool
	changed  chan struct{} // poked on every change while draining; capacity 1

	mu      sync.Mutex
	news    map[*trackedConn]struct{} // connections with no request yet
	newsEnd time.Time                 // while draining: when those are cut
}

const (
	classNone = iota
	classBusy
	classIdle
)

func newConnTracker() *connTracker {
	return &connTracker{changed: make(chan struct{}, 1), news: make(map[*trackedConn]struct{})}
}

func class(st http.ConnState) int32 {
	switch st {
	case http.StateNew, http.StateActive:
		return classBusy
	case http.StateIdle:
		return classIdle
	}
	return classNone
}

// trackedConn is an accepted connection with its tracking state. It keeps
// the methods net/http looks for on a *net.TCPConn (ReadFrom for sendfile,
// CloseWrite), and bounds read deadlines while the drain cuts it.
type trackedConn struct {
	net.Conn
	class atomic.Int32
	isNew atomic.Bool  // in the tracker's set
	limit atomic.Int64 // unix ns: no read may wait past it (0: none)
}

func (c *trackedConn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{c.Conn}, r)
}

func (c *trackedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// SetReadDeadline is the connection's, but not past the drain's limit:
// net/http sets a read deadline (or none) before it reads each request.
func (c *trackedConn) SetReadDeadline(t time.Time) error {
	if l := c.limit.Load(); l != 0 {
		if lim := time.Unix(0, l); t.IsZero() || t.After(lim) {
			t = lim
		}
	}
	return c.Conn.SetReadDeadline(t)
}

func (c *trackedConn) cutAt(t time.Time) {
	c.limit.Store(t.UnixNano())
	c.Conn.SetReadDeadline(t) // a read in progress honours it too
}

// trackingListener wraps each accepted connection in a trackedConn.
type trackingListener struct{ net.Listener }

func (l trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &trackedConn{Conn: c}, nil
}

// tracked finds the trackedConn under what net/http passes ConnState: the
// connection itself, or a *tls.Conn around it.
func tracked(c net.Conn) *trackedConn {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	t, _ := c.(*trackedConn)
	return t
}

func (t *connTracker) track(c net.Conn, st http.ConnState) {
	tc := tracked(c)
	if tc == nil {
		return
	}
	next := class(st)
	if prev := tc.class.Swap(next); prev != next {
		t.counts[prev].Add(-1)
		t.counts[next].Add(1)
	}
	switch {
	case st == http.StateNew:
		t.mu.Lock()
		t.news[tc] = struct{}{}
		tc.isNew.Store(true)
		if !t.newsEnd.IsZero() {
			tc.cutAt(t.newsEnd)
		}
		t.mu.Unlock()
	case tc.isNew.Swap(false):
		t.mu.Lock()
		delete(t.news, tc)
		t.mu.Unlock()
		tc.limit.Store(0) // a request came: it is served, not cut
	}
	if t.draining.Load() {
		select {
		case t.changed <- struct{}{}:
		default:
		}
	}
}

// drain starts the drain: a connection that has sent no request gets
// grace to send one, and is cut then.
func (t *connTracker) drain(grace time.Duration) {
	t.draining.Store(true)
	end := time.Now().Add(grace)
	t.mu.Lock()
	t.newsEnd = end
	for c := range t.news {
		c.cutAt(end)
	}
	t.mu.Unlock()
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
