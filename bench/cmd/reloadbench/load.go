package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// record is one request. Times are nanoseconds since the load started.
type record struct {
	start, end int64
	pid        int32
	gen        int32
	kind       uint16 // 0: ok; else an index into kinds
	reused     bool   // sent on a connection that had served a request before
}

// kinds interns the error kinds of failed requests; index 0 is "ok".
var kinds = struct {
	sync.Mutex
	names []string
	index map[string]uint16
}{names: []string{"ok"}, index: map[string]uint16{"ok": 0}}

func kindOf(name string) uint16 {
	kinds.Lock()
	defer kinds.Unlock()
	k, ok := kinds.index[name]
	if !ok {
		k = uint16(len(kinds.names))
		kinds.names = append(kinds.names, name)
		kinds.index[name] = k
	}
	return k
}

func kindName(k uint16) string {
	kinds.Lock()
	defer kinds.Unlock()
	return kinds.names[k]
}

// errKind names a failure by the step that failed and the error's cause.
func errKind(step string, err error) string {
	var cause string
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		cause = "refused"
	case errors.Is(err, syscall.ECONNRESET):
		cause = "reset"
	case errors.Is(err, syscall.EPIPE):
		cause = "broken-pipe"
	case errors.Is(err, os.ErrDeadlineExceeded):
		cause = "timeout"
	case errors.Is(err, io.ErrUnexpectedEOF):
		cause = "unexpected-eof"
	case errors.Is(err, io.EOF):
		cause = "eof"
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		cause = "no-local-port"
	default:
		cause = err.Error()
		if len(cause) > 60 {
			cause = cause[:60]
		}
	}
	return step + ":" + cause
}

// load is the set of closed-loop clients.
type load struct {
	o       options
	t0      time.Time
	clients []*client
	stopC   chan struct{}
	wg      sync.WaitGroup
	stale   int // idle connections the clients found closed (keep-alive)
}

func newLoad(o options) *load {
	return &load{o: o, stopC: make(chan struct{})}
}

func (l *load) since(t time.Time) int64 { return int64(t.Sub(l.t0)) }

func (l *load) start() {
	l.t0 = time.Now()
	perClient := max(l.o.maxRequests/l.o.clients, 1)
	req := "GET " + l.o.path + " HTTP/1.1\r\nHost: " + l.o.addr + "\r\nUser-Agent: reloadbench\r\n"
	if !l.o.keepAlive {
		req += "Connection: close\r\n"
	}
	req += "\r\n"
	for range l.o.clients {
		c := &client{
			addr:      l.o.addr,
			keepAlive: l.o.keepAlive,
			timeout:   l.o.timeout,
			t0:        l.t0,
			req:       []byte(req),
			br:        bufio.NewReaderSize(nil, 4096),
			recs:      make([]record, 0, min(perClient, 1<<16)),
			max:       perClient,
			think:     l.o.think,
			checkIdle: l.o.checkIdle,
			rng:       rand.New(rand.NewPCG(l.o.seed, uint64(len(l.clients)))),
		}
		l.clients = append(l.clients, c)
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			c.run(l.stopC)
		}()
	}
}

// stop ends the load, waits for every client (each within one request
// timeout) and returns all records.
func (l *load) stop() []record {
	close(l.stopC)
	l.wg.Wait()
	var n int
	for _, c := range l.clients {
		n += len(c.recs)
	}
	all := make([]record, 0, n)
	for _, c := range l.clients {
		all = append(all, c.recs...)
		l.stale += c.stale
	}
	return all
}

// client sends one request at a time.
type client struct {
	addr      string
	keepAlive bool
	timeout   time.Duration
	t0        time.Time
	req       []byte
	conn      net.Conn
	br        *bufio.Reader
	served    int // requests served on conn
	recs      []record
	max       int
	think     time.Duration
	rng       *rand.Rand
	checkIdle bool
	stale     int // idle connections found closed by the server
}

func (c *client) run(stop <-chan struct{}) {
	defer c.drop()
	for len(c.recs) < c.max {
		select {
		case <-stop:
			return
		default:
		}
		c.recs = append(c.recs, c.do())
		if c.think > 0 {
			t := time.NewTimer(time.Duration(c.rng.Int64N(int64(c.think) + 1)))
			select {
			case <-stop:
				t.Stop()
				return
			case <-t.C:
			}
		}
	}
}

func (c *client) drop() {
	if c.conn != nil {
		c.conn.Close()
		c.conn = nil
	}
	c.served = 0
}

// do sends one request and records it.
func (c *client) do() record {
	start := time.Now()
	deadline := start.Add(c.timeout)
	r := record{start: int64(start.Sub(c.t0)), reused: c.conn != nil}
	fail := func(step string, err error) record {
		c.drop()
		r.end = int64(time.Since(c.t0))
		r.kind = kindOf(errKind(step, err))
		return r
	}
	if c.conn != nil && c.checkIdle && c.closedWhileIdle() {
		// The server closed this idle connection: open a new one, as
		// browsers and net/http's Transport do. Not a failure.
		c.drop()
		c.stale++
		r.reused = false
	}
	if c.conn == nil {
		d := net.Dialer{Deadline: deadline}
		conn, err := d.DialContext(context.Background(), "tcp", c.addr)
		if err != nil {
			return fail("connect", err)
		}
		c.conn = conn
		c.br.Reset(conn)
	}
	if err := c.conn.SetDeadline(deadline); err != nil {
		return fail("deadline", err)
	}
	if _, err := c.conn.Write(c.req); err != nil {
		return fail("write", err)
	}
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		return fail("read", err)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	if err != nil {
		return fail("body", err)
	}
	if resp.StatusCode != http.StatusOK {
		return fail("status", fmt.Errorf("%d", resp.StatusCode))
	}
	pid, gen, ok := parseHello(body)
	if !ok {
		return fail("body", errors.New("not a hello"))
	}
	r.end = int64(time.Since(c.t0))
	r.pid, r.gen = int32(pid), int32(gen)
	c.served++
	if !c.keepAlive || resp.Close {
		if !c.keepAlive {
			// Wait for the server's FIN before closing, so that TIME_WAIT
			// lands on the server's side and thousands of connections per
			// second do not run the client out of local ports.
			io.Copy(io.Discard, c.br)
		}
		c.drop()
	}
	return r
}

// closedWhileIdle says whether the server has closed (or reset) the idle
// connection, by a recv(MSG_PEEK|MSG_DONTWAIT) that does not wait. (A read
// deadline in the past would not do: Go reports the timeout without trying
// the read.)
func (c *client) closedWhileIdle() bool {
	if c.br.Buffered() > 0 {
		return true // unsolicited bytes: the connection is unusable
	}
	sc, ok := c.conn.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return true
	}
	closed := false
	var b [1]byte
	err = rc.Read(func(fd uintptr) bool {
		_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		closed = err != syscall.EAGAIN // EOF (0 bytes), unsolicited data, or an error
		return true
	})
	return closed || err != nil
}

// parseHello reads pid and gen from "Hello from worker=<id> pid=<pid> gen=<gen>"
// (or "Slow hello from ...", hello's /slow).
func parseHello(b []byte) (pid, gen int, ok bool) {
	if !bytes.Contains(bytes.ToLower(b), []byte("hello from ")) {
		return 0, 0, false
	}
	pid, ok = field(b, "pid=")
	if !ok {
		return 0, 0, false
	}
	gen, _ = field(b, "gen=")
	return pid, gen, true
}

func field(b []byte, key string) (int, bool) {
	i := bytes.Index(b, []byte(key))
	if i < 0 {
		return 0, false
	}
	b = b[i+len(key):]
	j := 0
	for j < len(b) && b[j] >= '0' && b[j] <= '9' {
		j++
	}
	n, err := strconv.Atoi(string(b[:j]))
	return n, err == nil
}

// waitServing probes addr with fresh connections until n distinct pids have
// answered, within limit.
func waitServing(ctx context.Context, addr string, n int, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	c := &client{addr: addr, timeout: time.Second, t0: time.Now(), req: []byte("GET / HTTP/1.1\r\nHost: " + addr + "\r\nConnection: close\r\n\r\n"), br: bufio.NewReaderSize(nil, 4096)}
	seen := map[int32]bool{}
	var last string
	for probes := 0; probes < 100_000; probes++ {
		r := c.do()
		if r.kind == 0 {
			seen[r.pid] = true
			if len(seen) >= n {
				return nil
			}
		} else {
			last = kindName(r.kind)
		}
		if !sleep(ctx, 2*time.Millisecond) {
			return fmt.Errorf("%s: %d of %d worker pids answered within %v (last failure: %s)", addr, len(seen), n, limit, last)
		}
	}
	return fmt.Errorf("%s: %d of %d worker pids answered", addr, len(seen), n)
}
