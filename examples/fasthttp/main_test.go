package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/forkline/forkline/internal/exampletest"
)

const (
	reloads = 10
	clients = 24  // keep-alive clients, one request at a time each
	perGen  = 500 // requests a new generation answers before the next reload
)

// TestReloadsLoseNoRequest reloads a 2-worker cluster 10 times under
// keep-alive load and expects every request to be answered, and every old
// worker to finish its drain without being killed.
func TestReloadsLoseNoRequest(t *testing.T) {
	c := exampletest.Start(t, exampletest.Build(t))
	addr := c.WaitLog(t, `msg=listening addr=(\S+)`)[1]
	c.WaitLog(t, `msg="cluster ready"`)
	waitBothWorkers(t, addr)

	tl := newTally()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() { (&client{addr: addr}).run(stop, tl) })
	}
	start := time.Now()
	for gen := 2; gen <= reloads+1; gen++ {
		if err := c.Cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		c.WaitLog(t, fmt.Sprintf(`msg=reloaded gen=%d\b`, gen))
		tl.waitGen(t, gen, perGen)
	}
	close(stop)
	wg.Wait()
	c.Stop(t)

	res := tl.snapshot()
	t.Logf("%d reloads in %v: %d requests answered, %d failed (%d connections closed by the server with Connection: close)",
		reloads, time.Since(start).Round(time.Millisecond), res.total(), res.failed, res.closed)
	for _, gen := range res.gens() {
		t.Logf("  gen %d: %d requests", gen, res.byGen[gen])
	}
	if res.failed > 0 {
		t.Errorf("%d requests failed over %d reloads; first: %v", res.failed, reloads, res.errs)
	}
	if c.Logged(`killing it`) {
		t.Errorf("a draining worker was killed: its drain did not end on its own\n%s", c.Log())
	}
	if c.Logged(`DATA RACE`) {
		t.Errorf("the race detector found a race in a worker or the parent\n%s", c.Log())
	}
	for gen := 1; gen <= reloads+1; gen++ {
		if res.byGen[gen] == 0 {
			t.Errorf("generation %d answered no request", gen)
		}
	}
}

// client sends requests one after the other on a keep-alive connection,
// and opens a new one when the server answers with "Connection: close" (as
// wrk, browsers and net/http's Transport do). It never retries: a request
// that fails is counted, and the client starts over on a new connection.
type client struct {
	addr string
	conn net.Conn
	br   *bufio.Reader
}

var request = []byte("GET / HTTP/1.1\r\nHost: forkline\r\n\r\n")

func (c *client) run(stop <-chan struct{}, tl *tally) {
	defer c.drop()
	for {
		select {
		case <-stop:
			return
		default:
		}
		w, closed, err := c.do()
		tl.record(w, closed, err)
		if err != nil || closed {
			c.drop()
		}
	}
}

func (c *client) drop() {
	if c.conn != nil {
		c.conn.Close()
		c.conn = nil
	}
}

// do sends one request and reads its answer; the deadline is a watchdog.
func (c *client) do() (w who, closed bool, err error) {
	if c.conn == nil {
		d := net.Dialer{Timeout: 5 * time.Second}
		if c.conn, err = d.DialContext(context.Background(), "tcp", c.addr); err != nil {
			return w, false, fmt.Errorf("connect: %w", err)
		}
		c.br = bufio.NewReader(c.conn)
	}
	c.conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.conn.Write(request); err != nil {
		return w, false, fmt.Errorf("write: %w", err)
	}
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		return w, false, fmt.Errorf("read: %w", err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return w, false, fmt.Errorf("body: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return w, false, fmt.Errorf("status %d", resp.StatusCode)
	}
	w, err = parseWho(string(body))
	return w, resp.Close, err
}

// who is the worker named by an answer.
type who struct{ id, pid, gen int }

func parseWho(body string) (who, error) {
	var w who
	_, err := fmt.Sscanf(body, "Hello from worker=%d pid=%d gen=%d", &w.id, &w.pid, &w.gen)
	if err != nil {
		return w, fmt.Errorf("answer %q: %w", body, err)
	}
	return w, nil
}

// waitBothWorkers opens connections until each of the two workers has
// answered one (the kernel picks a worker by the connection's ports).
func waitBothWorkers(t *testing.T, addr string) {
	seen := map[int]bool{}
	for i := 0; len(seen) < 2; i++ {
		if i == 200 {
			t.Fatalf("200 connections reached only workers %v", seen)
		}
		c := &client{addr: addr}
		w, _, err := c.do()
		c.drop()
		if err != nil {
			t.Fatal(err)
		}
		seen[w.id] = true
	}
}

// tally counts the answered requests by generation, the connections the
// server closed, and the failures.
type tally struct {
	mu      sync.Mutex
	byGen   map[int]int
	closed  int
	failed  int
	errs    []string      // the first few failures
	changed chan struct{} // poked on every answer; capacity 1
}

func newTally() *tally {
	return &tally{byGen: map[int]int{}, changed: make(chan struct{}, 1)}
}

func (tl *tally) record(w who, closed bool, err error) {
	tl.mu.Lock()
	switch {
	case err != nil:
		tl.failed++
		if len(tl.errs) < 5 {
			tl.errs = append(tl.errs, err.Error())
		}
	case closed:
		tl.closed++
		fallthrough
	default:
		tl.byGen[w.gen]++
	}
	tl.mu.Unlock()
	select {
	case tl.changed <- struct{}{}:
	default:
	}
}

// waitGen returns once generation gen has answered n requests.
func (tl *tally) waitGen(t *testing.T, gen, n int) {
	watchdog := time.After(20 * time.Second)
	for {
		tl.mu.Lock()
		got := tl.byGen[gen]
		tl.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-tl.changed:
		case <-watchdog:
			t.Fatalf("generation %d answered %d requests in 20 s, want %d", gen, got, n)
		}
	}
}

func (tl *tally) snapshot() *tally {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	s := &tally{byGen: map[int]int{}, closed: tl.closed, failed: tl.failed, errs: append([]string(nil), tl.errs...)}
	for g, n := range tl.byGen {
		s.byGen[g] = n
	}
	return s
}

func (tl *tally) total() (n int) {
	for _, c := range tl.byGen {
		n += c
	}
	return n
}

func (tl *tally) gens() []int {
	var gens []int
	for g := range tl.byGen {
		gens = append(gens, g)
	}
	sort.Ints(gens)
	return gens
}
