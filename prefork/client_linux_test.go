package prefork_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// HTTP clients of the hello helper, and the load that the tests run
// against a cluster while they reload, kill or stop it.

// answer is one parsed answer of the hello helper.
type answer struct {
	worker, pid, gen int
	version          string
}

func parseAnswer(body string) (answer, error) {
	var a answer
	i := strings.Index(body, "from ")
	if i < 0 {
		return a, fmt.Errorf("unexpected body %q", body)
	}
	if _, err := fmt.Sscanf(body[i:], "from worker=%d pid=%d gen=%d", &a.worker, &a.pid, &a.gen); err != nil {
		return a, fmt.Errorf("unexpected body %q: %v", body, err)
	}
	_, v, _ := strings.Cut(body, "version=")
	a.version = strings.TrimSpace(v)
	return a, nil
}

// roundTrip sends GET path on conn and reads the answer's body.
func roundTrip(conn net.Conn, br *bufio.Reader, path string, closeConn bool) (body string, closed bool, err error) {
	req := "GET " + path + " HTTP/1.1\r\nHost: test\r\n\r\n"
	if closeConn {
		req = "GET " + path + " HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
	}
	if _, err := io.WriteString(conn, req); err != nil {
		return "", false, fmt.Errorf("write: %w", err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return "", false, fmt.Errorf("read response: %w", err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return "", false, fmt.Errorf("read body: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", false, fmt.Errorf("status %s: %s", resp.Status, b)
	}
	return string(b), resp.Close, nil
}

// fetch sends GET path on a fresh connection and returns the body.
func fetch(addr, path string, timeout time.Duration) (string, error) {
	conn, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return "", fmt.Errorf("dial: %w", err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(timeout))
	body, _, err := roundTrip(conn, bufio.NewReader(conn), path, true)
	return body, err
}

// get sends GET path on a fresh connection and parses the answer.
func get(addr, path string, timeout time.Duration) (answer, error) {
	body, err := fetch(addr, path, timeout)
	if err != nil {
		return answer{}, err
	}
	return parseAnswer(body)
}

// mustGet is get for the test goroutine.
func mustGet(t *testing.T, addr string) answer {
	t.Helper()
	a, err := get(addr, "/", requestTimeout)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// Bounds of every load loop: a client stops after loadMaxPerClient requests
// or loadMaxTime, whichever comes first, if the test has not stopped it.
const (
	loadMaxPerClient = 100_000
	loadMaxTime      = 45 * time.Second
	requestTimeout   = 10 * time.Second
)

// load is a set of clients that request GET / until stopped, and record
// which generation and process answered.
type load struct {
	stop      chan struct{}
	wg        sync.WaitGroup
	keepAlive bool
	// untilRefused: a refused dial ends a client rather than fail; the
	// cluster has closed its sockets (a stop).
	untilRefused bool
	maxTime      time.Duration // the clients' bound; 0: loadMaxTime

	mu       sync.Mutex
	grew     chan struct{} // closed, and replaced, at every answer
	ok       int
	failures []failure
	conns    int                  // connections opened
	sentAway int                  // answers with "Connection: close" to a keep-alive client
	gens     map[int]int          // answers by generation
	pids     map[int]map[int]bool // generation -> pids that answered
}

// A failure is one failed request (or dial).
type failure struct {
	dialed time.Time // when its connection was made; zero for a failed dial
	desc   string
}

// startLoad starts n clients on addr: on a fresh connection per request,
// or on keep-alive connections, reopened only after an answer with
// "Connection: close" (how a draining worker sends its clients away).
func startLoad(addr string, n int, keepAlive bool) *load {
	return startLoadWith(&load{keepAlive: keepAlive}, addr, n)
}

func startLoadWith(l *load, addr string, n int) *load {
	l.stop, l.grew = make(chan struct{}), make(chan struct{})
	l.gens, l.pids = make(map[int]int), make(map[int]map[int]bool)
	end := time.Now().Add(cmpOr(l.maxTime, loadMaxTime))
	for range n {
		l.wg.Go(func() { l.client(addr, end) })
	}
	return l
}

func (l *load) stopped(end time.Time) bool {
	select {
	case <-l.stop:
		return true
	default:
		return time.Now().After(end)
	}
}

func (l *load) client(addr string, end time.Time) {
	var conn net.Conn
	var br *bufio.Reader
	var dialed time.Time // when conn was made
	var onConn int       // requests answered on conn
	var last answer      // the last answer on conn
	defer func() {
		if conn != nil {
			conn.Close()
		}
	}()
	for range loadMaxPerClient {
		if l.stopped(end) {
			return
		}
		if conn == nil {
			var err error
			if conn, err = net.DialTimeout("tcp", addr, requestTimeout); err != nil {
				conn = nil
				if l.untilRefused && errors.Is(err, syscall.ECONNREFUSED) {
					return
				}
				l.fail(failure{desc: "dial: " + err.Error()})
				continue
			}
			dialed = time.Now()
			br = bufio.NewReader(conn)
			onConn, last = 0, answer{}
			l.mu.Lock()
			l.conns++
			l.mu.Unlock()
		}
		conn.SetDeadline(time.Now().Add(requestTimeout))
		body, closed, err := roundTrip(conn, br, "/", !l.keepAlive)
		var a answer
		if err == nil {
			a, err = parseAnswer(body)
		}
		if err != nil {
			l.fail(failure{dialed: dialed, desc: fmt.Sprintf("request %d on a connection made at %s (last answer from worker %d pid %d gen %d): %v",
				onConn+1, dialed.Format("15:04:05.000000"), last.worker, last.pid, last.gen, err)})
			conn.Close()
			conn = nil
			continue
		}
		onConn++
		last = a
		l.answered(a, l.keepAlive && closed)
		if closed || !l.keepAlive {
			conn.Close()
			conn = nil
		}
	}
}

func (l *load) fail(f failure) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.failures = append(l.failures, f)
	l.poke()
}

func (l *load) answered(a answer, sentAway bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ok++
	if sentAway {
		l.sentAway++
	}
	l.gens[a.gen]++
	if l.pids[a.gen] == nil {
		l.pids[a.gen] = make(map[int]bool)
	}
	l.pids[a.gen][a.pid] = true
	l.poke()
}

func (l *load) poke() {
	close(l.grew)
	l.grew = make(chan struct{})
}

// awaitFunc waits until cond, evaluated under the load's lock after every
// answer, holds.
func (l *load) awaitFunc(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	watchdog := time.NewTimer(timeout)
	defer watchdog.Stop()
	for {
		l.mu.Lock()
		ok, grew := cond(), l.grew
		l.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-grew:
		case <-watchdog.C:
			t.Fatalf("clients: no %s within %v (%s)", what, timeout, l.summary())
		}
	}
}

// awaitOK waits until the clients have had n answers in all.
func (l *load) awaitOK(t *testing.T, n int, timeout time.Duration) {
	t.Helper()
	l.awaitFunc(t, timeout, strconv.Itoa(n)+" answers", func() bool { return l.ok >= n })
}

// awaitGen waits until the clients have had n answers from generation gen.
func (l *load) awaitGen(t *testing.T, gen, n int, timeout time.Duration) {
	t.Helper()
	l.awaitFunc(t, timeout, fmt.Sprintf("%d answers from generation %d", n, gen), func() bool { return l.gens[gen] >= n })
}

// finish stops the clients and waits for them; it may be called again.
func (l *load) finish() {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	l.wg.Wait()
}

// wait waits for the clients to end on their own (untilRefused).
func (l *load) wait() { l.wg.Wait() }

func (l *load) counts() (ok, fail int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ok, len(l.failures)
}

// failed returns the failures so far.
func (l *load) failed() []failure {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.failures)
}

// errors describes the first failures.
func (l *load) errors() []string {
	fs := l.failed()
	var descs []string
	for _, f := range fs[:min(20, len(fs))] {
		descs = append(descs, f.desc)
	}
	return descs
}

func (l *load) summary() string {
	errs := l.errors()
	l.mu.Lock()
	defer l.mu.Unlock()
	return fmt.Sprintf("ok %d, failed %d, connections %d, sent away %d, by generation %v; first failures: %v",
		l.ok, len(l.failures), l.conns, l.sentAway, l.gens, errs)
}

// slowRequest asks for /slow?d=d, signals inflight once the headers are in
// (the server is working on it), and checks the body.
func slowRequest(addr, d string, inflight chan<- struct{}) error {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	fmt.Fprintf(conn, "GET /slow?d=%s HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n", d)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	inflight <- struct{}{}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if !strings.HasPrefix(string(body), "Slow hello") {
		return fmt.Errorf("unexpected body %q", body)
	}
	return nil
}

func portOf(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	port, _ := strconv.Atoi(p)
	return port
}

func cmpOr(d, dflt time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return dflt
}
