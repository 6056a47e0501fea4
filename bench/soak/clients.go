package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Failure kinds.
const (
	kindRefused = "refused"
	kindReset   = "reset"
	kindTimeout = "timeout"
	kindOther   = "other"
)

var kinds = []string{kindRefused, kindReset, kindTimeout, kindOther}

// failure is one failed request.
type failure struct {
	start, at time.Time // request start, failure
	kind      string
	client    string    // "close#3", "keepalive#5"
	port      int       // client's local port; 0 when the connect failed
	dialed    time.Time // when that connection was made
	lastPID   int       // keep-alive: the worker that last answered on it
	err       string
}

// load runs the clients and keeps the exact count.
type load struct {
	addr     string
	timeout  time.Duration
	sent, ok atomic.Int64
	okSince  atomic.Int64 // answers completed after sinceNano
	since    atomic.Int64 // unix nanoseconds; 0: not counting
	mu       sync.Mutex
	failures []failure
	wg       sync.WaitGroup
}

// start launches n closers (a new connection per request) and k
// keep-alive clients; they run until ctx is done, each finishing the
// request it has in flight (bounded by the request timeout).
func (l *load) start(ctx context.Context, n, k int) {
	for i := range n {
		l.wg.Go(func() { l.closer(ctx, fmt.Sprintf("close#%d", i+1)) })
	}
	for i := range k {
		l.wg.Go(func() { l.keepAlive(ctx, fmt.Sprintf("keepalive#%d", i+1)) })
	}
}

// wait waits for the clients to finish, up to the watchdog.
func (l *load) wait(watchdog time.Duration) bool {
	done := make(chan struct{})
	go func() { l.wg.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(watchdog):
		return false
	}
}

var (
	reqClose     = []byte("GET / HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n")
	reqKeepAlive = []byte("GET / HTTP/1.1\r\nHost: soak\r\n\r\n")
	hello        = []byte("Hello from worker=")
)

func (l *load) closer(ctx context.Context, name string) {
	br := bufio.NewReaderSize(nil, 4096)
	for ctx.Err() == nil {
		start := time.Now()
		l.sent.Add(1)
		d := net.Dialer{Deadline: start.Add(l.timeout)}
		conn, err := d.Dial("tcp", l.addr)
		if err != nil {
			l.fail(ctx, failure{start: start, client: name, err: err.Error(), kind: classify(err)})
			continue
		}
		port := conn.LocalAddr().(*net.TCPAddr).Port
		conn.SetDeadline(start.Add(l.timeout))
		br.Reset(conn)
		_, _, err = roundTrip(conn, br, reqClose)
		conn.Close()
		if err != nil {
			l.fail(ctx, failure{start: start, client: name, port: port, dialed: start, err: err.Error(), kind: classify(err)})
			continue
		}
		l.answered()
	}
}

func (l *load) keepAlive(ctx context.Context, name string) {
	var (
		conn    net.Conn
		dialed  time.Time
		lastPID int
		br      = bufio.NewReaderSize(nil, 4096)
	)
	for ctx.Err() == nil {
		start := time.Now()
		l.sent.Add(1)
		if conn == nil {
			d := net.Dialer{Deadline: start.Add(l.timeout)}
			c, err := d.Dial("tcp", l.addr)
			if err != nil {
				l.fail(ctx, failure{start: start, client: name, err: err.Error(), kind: classify(err)})
				continue
			}
			conn, dialed, lastPID = c, start, 0
			br.Reset(conn)
		}
		conn.SetDeadline(start.Add(l.timeout))
		pid, closing, err := roundTrip(conn, br, reqKeepAlive)
		if err != nil {
			port := conn.LocalAddr().(*net.TCPAddr).Port
			conn.Close()
			conn = nil
			l.fail(ctx, failure{start: start, client: name, port: port, dialed: dialed, lastPID: lastPID, err: err.Error(), kind: classify(err)})
			continue
		}
		lastPID = pid
		if closing { // a draining worker sends us away: reconnect
			conn.Close()
			conn = nil
		}
		l.answered()
	}
	if conn != nil {
		conn.Close()
	}
}

func (l *load) answered() {
	l.ok.Add(1)
	if s := l.since.Load(); s != 0 && time.Now().UnixNano() > s {
		l.okSince.Add(1)
	}
}

// fail records f and, so that a port nobody listens on does not turn 48
// clients into a busy loop, paces the client for 10 ms (load bound, not
// synchronisation).
func (l *load) fail(ctx context.Context, f failure) {
	f.at = time.Now()
	l.mu.Lock()
	l.failures = append(l.failures, f)
	l.mu.Unlock()
	t := time.NewTimer(10 * time.Millisecond)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// roundTrip writes req and reads one answer; it returns the answering
// worker's pid and whether the server closes the connection.
func roundTrip(conn net.Conn, br *bufio.Reader, req []byte) (pid int, closing bool, err error) {
	if _, err := conn.Write(req); err != nil {
		return 0, false, err
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return 0, false, err
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	if err != nil {
		return 0, false, err
	}
	if resp.StatusCode != http.StatusOK || !bytes.HasPrefix(body, hello) {
		return 0, false, fmt.Errorf("bad answer: %s %q", resp.Status, body)
	}
	return pidOf(body), resp.Close, nil
}

// pidOf reads pid=N from "Hello from worker=1 pid=4242 gen=1".
func pidOf(body []byte) int {
	_, rest, ok := bytes.Cut(body, []byte(" pid="))
	if !ok {
		return 0
	}
	end := bytes.IndexByte(rest, ' ')
	if end < 0 {
		end = len(rest)
	}
	n, _ := strconv.Atoi(string(rest[:end]))
	return n
}

func classify(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return kindRefused
	case errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return kindTimeout
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return kindReset
	}
	return kindOther
}

// snapshotFailures returns a copy of the failures so far.
func (l *load) snapshotFailures() []failure {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]failure(nil), l.failures...)
}
