package load

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"syscall"
	"time"

	"github.com/forkline/forkline/bench/internal/harness"
)

// client sends one request at a time.
type client struct {
	cfg    Config
	t0     time.Time
	req    []byte
	conn   net.Conn
	br     *bufio.Reader
	served int // requests served on conn
	recs   []Record
	max    int
	rng    *rand.Rand
	stale  int // idle connections found closed by the server
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
		if c.cfg.Think > 0 {
			// The think time is part of the load's shape, not a wait.
			t := time.NewTimer(time.Duration(c.rng.Int64N(int64(c.cfg.Think) + 1)))
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
func (c *client) do() Record {
	start := time.Now()
	deadline := start.Add(c.cfg.Timeout)
	r := Record{Start: int64(start.Sub(c.t0)), Reused: c.conn != nil}
	fail := func(step string, err error) Record {
		c.drop()
		r.End = int64(time.Since(c.t0))
		r.Kind = kindOf(errKind(step, err))
		return r
	}
	if c.conn != nil && c.cfg.CheckIdle && c.closedWhileIdle() {
		// The server closed this idle connection: open a new one, as
		// browsers and net/http's Transport do. Not a failure.
		c.drop()
		c.stale++
		r.Reused = false
	}
	if c.conn == nil {
		d := net.Dialer{Deadline: deadline}
		conn, err := d.DialContext(context.Background(), "tcp", c.cfg.Addr)
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
	pid, gen, ok := harness.ParseHello(body)
	if !ok {
		return fail("body", errors.New("not a hello"))
	}
	r.End = int64(time.Since(c.t0))
	r.Pid, r.Gen = int32(pid), int32(gen)
	c.served++
	c.finish(resp.Close)
	return r
}

// finish closes the connection after an answer unless it is kept alive.
func (c *client) finish(serverClosed bool) {
	if c.cfg.KeepAlive && !serverClosed {
		return
	}
	if !c.cfg.KeepAlive {
		// Wait for the server's FIN before closing, so that TIME_WAIT
		// lands on the server's side and thousands of connections per
		// second do not run the client out of local ports.
		io.Copy(io.Discard, c.br)
	}
	c.drop()
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
