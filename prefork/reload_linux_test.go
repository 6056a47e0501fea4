package prefork_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Tests of the zero-downtime reload (SIGHUP, Cluster.Reload): under load on
// fresh and keep-alive connections, with a new binary, with a failing new
// generation, with coalesced signals, and for leaks over many reloads. Each
// runs the "reload" helper (helpers_reload_test.go) as a real cluster.

const reloadedMsg = "reloaded"

// startReloadCluster starts the "reload" helper with extra environment env.
func startReloadCluster(t *testing.T, env []string, args ...string) *testCluster {
	t.Helper()
	return startHelper(t, raceEnv(append(env, envHelper+"=reload")), args...)
}

// raceEnv adds to env what makes a race-enabled helper exit at once: by
// default the race runtime sleeps 1 s in os.Exit (GORACE atexit_sleep_ms),
// which every drained worker would spend as a zombie-to-be, not serving.
func raceEnv(env []string) []string {
	return append(env, "GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
}

// reload sends SIGHUP and waits for the "reloaded" record of generation gen,
// counting on the way the records that count accepts. It returns how long
// the reload took, from the signal to the record.
func (c *testCluster) reload(gen int, count func(logRecord)) time.Duration {
	c.t.Helper()
	start := time.Now()
	c.signal(syscall.SIGHUP)
	c.waitFor(30*time.Second, fmt.Sprintf("reload to generation %d", gen), func(r logRecord) bool {
		if count != nil {
			count(r)
		}
		return r.Msg == reloadedMsg && r.Gen == gen
	})
	return time.Since(start)
}

// exitCounter counts the "exit" records of workers the parent asked to stop
// (the parent logs one after it has reaped the process), and notes those
// that did not exit 0: a drain that ended in a kill, or a data race found
// in a worker by the race detector (status 66).
type exitCounter struct {
	n   int
	bad []string
}

func (e *exitCounter) count(r logRecord) {
	if r.Msg != "exit" {
		return
	}
	e.n++
	if r.Status != "exit status 0" && len(e.bad) < 10 {
		e.bad = append(e.bad, fmt.Sprintf("worker %d pid %d gen %d: %s", r.Worker, r.PID, r.Gen, r.Status))
	}
}

// await waits until n workers have exited.
func (e *exitCounter) await(c *testCluster, n int) {
	c.t.Helper()
	if e.n >= n {
		return
	}
	c.waitFor(30*time.Second, fmt.Sprintf("exit of %d old workers", n), func(r logRecord) bool {
		e.count(r)
		return e.n >= n
	})
}

// answer is one parsed answer of the reload helper.
type answer struct {
	hello
	version string
	close   bool // the response said "Connection: close"
}

// roundTrip sends one GET / on conn and reads the answer.
func roundTrip(conn net.Conn, br *bufio.Reader, closeConn bool) (answer, error) {
	var a answer
	req := "GET / HTTP/1.1\r\nHost: test\r\n\r\n"
	if closeConn {
		req = "GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
	}
	if _, err := io.WriteString(conn, req); err != nil {
		return a, fmt.Errorf("write: %w", err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return a, fmt.Errorf("read response: %w", err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return a, fmt.Errorf("read body: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return a, fmt.Errorf("status %s: %s", resp.Status, body)
	}
	a.close = resp.Close
	if a.hello, err = parseHello(string(body)); err != nil {
		return a, err
	}
	_, v, _ := strings.Cut(string(body), "version=")
	a.version = strings.TrimSpace(v)
	return a, nil
}

// getAnswer sends one request on a fresh connection.
func getAnswer(addr string, timeout time.Duration) (answer, error) {
	conn, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return answer{}, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(timeout))
	return roundTrip(conn, bufio.NewReader(conn), true)
}

// Bounds of every load loop: a client stops after loadMaxPerClient requests
// or loadMaxTime, whichever comes first, if the test has not stopped it.
const (
	loadMaxPerClient = 100_000
	loadMaxTime      = 45 * time.Second
	requestTimeout   = 10 * time.Second
)

// reloadLoad is a set of clients that request until stopped and record
// which generation and process answered.
type reloadLoad struct {
	stop     chan struct{}
	wg       sync.WaitGroup
	ok       atomic.Int64
	fail     atomic.Int64
	conns    atomic.Int64 // connections opened
	sentAway atomic.Int64 // answers with "Connection: close" to a keep-alive client

	mu      sync.Mutex
	gens    map[int]int          // answers by generation
	pids    map[int]map[int]bool // generation -> pids that answered
	errs    []string             // the first failures, described
	waiters map[int]genWaiter    // by generation
}

// genWaiter waits for n answers from one generation.
type genWaiter struct {
	n    int
	done chan struct{}
}

// startReloadLoad starts n clients on addr: on a fresh connection per
// request, or on keep-alive connections that are reopened only after an
// answer with "Connection: close".
func startReloadLoad(addr string, n int, keepAlive bool) *reloadLoad {
	l := &reloadLoad{
		stop:    make(chan struct{}),
		gens:    make(map[int]int),
		pids:    make(map[int]map[int]bool),
		waiters: make(map[int]genWaiter),
	}
	end := time.Now().Add(loadMaxTime)
	for range n {
		l.wg.Add(1)
		if keepAlive {
			go l.keepAliveClient(addr, end)
		} else {
			go l.freshClient(addr, end)
		}
	}
	return l
}

func (l *reloadLoad) stopped(end time.Time) bool {
	select {
	case <-l.stop:
		return true
	default:
		return time.Now().After(end)
	}
}

func (l *reloadLoad) freshClient(addr string, end time.Time) {
	defer l.wg.Done()
	for range loadMaxPerClient {
		if l.stopped(end) {
			return
		}
		l.conns.Add(1)
		a, err := getAnswer(addr, requestTimeout)
		if err != nil {
			l.failed(err.Error())
			continue
		}
		l.answered(a)
	}
}

// keepAliveClient keeps one connection and sends its requests one after
// the other on it. An answer with "Connection: close" ends the connection
// (that is how a draining worker sends its clients elsewhere); any error
// is a failure.
func (l *reloadLoad) keepAliveClient(addr string, end time.Time) {
	defer l.wg.Done()
	var conn net.Conn
	var br *bufio.Reader
	var onConn int  // requests answered on conn
	var last answer // the last answer on conn
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
			conn, err = net.DialTimeout("tcp", addr, requestTimeout)
			if err != nil {
				l.failed("dial: " + err.Error())
				conn = nil
				continue
			}
			l.conns.Add(1)
			br = bufio.NewReader(conn)
			onConn, last = 0, answer{}
		}
		conn.SetDeadline(time.Now().Add(requestTimeout))
		a, err := roundTrip(conn, br, false)
		if err != nil {
			l.failed(fmt.Sprintf("request %d on a keep-alive connection (last answer from worker %d pid %d gen %d): %v",
				onConn+1, last.worker, last.pid, last.gen, err))
			conn.Close()
			conn = nil
			continue
		}
		onConn++
		last = a
		l.answered(a)
		if a.close {
			l.sentAway.Add(1)
			conn.Close()
			conn = nil
		}
	}
}

func (l *reloadLoad) failed(desc string) {
	l.fail.Add(1)
	l.mu.Lock()
	if len(l.errs) < 20 {
		l.errs = append(l.errs, desc)
	}
	l.mu.Unlock()
}

func (l *reloadLoad) answered(a answer) {
	l.ok.Add(1)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.gens[a.gen]++
	if l.pids[a.gen] == nil {
		l.pids[a.gen] = make(map[int]bool)
	}
	l.pids[a.gen][a.pid] = true
	if w, ok := l.waiters[a.gen]; ok && l.gens[a.gen] >= w.n {
		close(w.done)
		delete(l.waiters, a.gen)
	}
}

// awaitGen waits until the clients have had n answers from generation gen.
func (l *reloadLoad) awaitGen(t *testing.T, gen, n int, timeout time.Duration) {
	t.Helper()
	l.mu.Lock()
	if l.gens[gen] >= n {
		l.mu.Unlock()
		return
	}
	w := genWaiter{n: n, done: make(chan struct{})}
	l.waiters[gen] = w
	l.mu.Unlock()
	select {
	case <-w.done:
	case <-time.After(timeout):
		t.Fatalf("not %d answers from generation %d within %v (ok %d, failed %d: %v)", n, gen, timeout, l.ok.Load(), l.fail.Load(), l.errors())
	}
}

func (l *reloadLoad) errors() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.errs)
}

// finish stops the clients and waits for them.
func (l *reloadLoad) finish() {
	close(l.stop)
	l.wg.Wait()
}

// Ten reloads while 32 clients request without pause: not one request
// fails, every new generation serves (100 answers before the next reload),
// and every old worker finishes its drain and exits 0. Once with a fresh
// connection per request, once with keep-alive connections.
func TestReloadUnderLoad(t *testing.T) {
	for _, tc := range []struct {
		name      string
		keepAlive bool
	}{
		{"fresh connections", false},
		{"keep-alive", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const clients, reloads, perGen = 32, 10, 100
			c := startReloadCluster(t, nil, "-workers", "2")
			addr, _ := c.ready()
			l := startReloadLoad(addr, clients, tc.keepAlive)
			defer func() {
				select {
				case <-l.stop:
				default:
					l.finish()
				}
			}()
			l.awaitGen(t, 1, perGen, 10*time.Second)
			var took []time.Duration
			var exits exitCounter
			for gen := 2; gen <= 1+reloads; gen++ {
				took = append(took, c.reload(gen, exits.count))
				// The next reload only once this generation has served.
				l.awaitGen(t, gen, perGen, 10*time.Second)
			}
			l.finish()
			exits.await(c, 2*reloads)
			t.Logf("%d reloads under load took %v; requests ok %d, failed %d; connections %d, answers with Connection: close %d; answers by generation %v",
				reloads, took, l.ok.Load(), l.fail.Load(), l.conns.Load(), l.sentAway.Load(), l.gens)
			if n := l.fail.Load(); n > 0 {
				t.Errorf("%d requests failed during reloads; first failures:\n%s", n, strings.Join(l.errors(), "\n"))
			}
			if tc.keepAlive && l.sentAway.Load() == 0 {
				t.Error("no keep-alive connection was sent away with Connection: close, though every old worker drained")
			}
			if len(exits.bad) > 0 {
				t.Errorf("old workers that did not exit 0: %v", exits.bad)
			}
			c.stopAndCheck()
		})
	}
}

// A reload starts the executable found on disk now: replace the binary the
// parent was started from (a new file renamed over it), SIGHUP, and the new
// generation answers with the new version.
func TestReloadPicksUpNewBinary(t *testing.T) {
	c, bin, self := startFromCopy(t, "-workers", "2")
	addr, _ := c.ready()
	if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", c.cmd.Process.Pid)); err != nil || exe != bin {
		t.Fatalf("the parent runs %q (%v), want %s", exe, err, bin)
	}
	a, err := getAnswer(addr, requestTimeout)
	if err != nil {
		t.Fatal(err)
	}
	if a.gen != 1 || a.version != "1" {
		t.Fatalf("first answer from gen %d version %q, want gen 1 version 1", a.gen, a.version)
	}

	// Version 2: the same test binary, started by a script that sets
	// HELLO_VERSION=2. Written aside and renamed over bin, as a deploy does.
	script := fmt.Sprintf("#!/bin/sh\n%s=2 exec '%s' \"$@\"\n", envVersion, strings.ReplaceAll(self, "'", `'\''`))
	tmp := bin + ".new"
	if err := os.WriteFile(tmp, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, bin); err != nil {
		t.Fatal(err)
	}

	var exits exitCounter
	took := c.reload(2, exits.count)
	// Until the old workers are gone, either generation may answer; each
	// must answer with its own version.
	seen := make(map[int]int)
	for i := 0; seen[2] == 0; i++ {
		if i == 200 {
			t.Fatalf("no answer from generation 2 in 200 requests after the reload: %v", seen)
		}
		a, err := getAnswer(addr, requestTimeout)
		if err != nil {
			t.Fatalf("request %d after the reload: %v", i, err)
		}
		seen[a.gen]++
		if want := strconv.Itoa(a.gen); a.version != want {
			t.Errorf("generation %d (pid %d) answered with version %q, want %s", a.gen, a.pid, a.version, want)
		}
	}
	exits.await(c, 2)
	for i := range 20 {
		a, err := getAnswer(addr, requestTimeout)
		if err != nil {
			t.Fatalf("request %d after the old generation exited: %v", i, err)
		}
		if a.gen != 2 || a.version != "2" {
			t.Errorf("answer from gen %d version %q after the old generation exited, want gen 2 version 2", a.gen, a.version)
		}
	}
	t.Logf("reload to the new binary took %v; answers right after it by generation: %v", took, seen)
	c.stopAndCheck()
}

// startFromCopy starts the "reload" helper from a copy of the test binary
// in a temporary directory, and returns the cluster, the copy's path and the
// test binary's.
func startFromCopy(t *testing.T, args ...string) (c *testCluster, bin, self string) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin = filepath.Join(t.TempDir(), "bin")
	copyFile(t, self, bin)
	c = startHelper(t, raceEnv([]string{envHelper + "=exec", envExecPath + "=" + bin, envExecHelper + "=reload"}), args...)
	return c, bin, self
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}

// A new generation that cannot serve: its workers fail at start, or never
// become ready, or its executable is gone. The reload fails (by SIGHUP, and
// by Cluster.Reload), and the old generation serves on, the same
// processes, without one failed request; the failed workers are all reaped.
func TestReloadFailureKeepsOldGeneration(t *testing.T) {
	for _, tc := range []struct {
		name  string
		args  []string
		cause string // in the failure record and Reload's error
		api   bool   // try Cluster.Reload too
		// fromCopy starts the cluster from a copy of the test binary,
		// removed before the reload.
		fromCopy bool
	}{
		{
			name:  "workers fail at start",
			args:  []string{"-fail-from-gen", "2"},
			cause: "cannot open /nonexistent/config.toml",
			api:   true,
		},
		{
			name:  "workers never ready",
			args:  []string{"-slow-from-gen", "2", "-ready-timeout", "2s"},
			cause: "not ready within 2s",
		},
		{
			name:     "executable gone",
			cause:    "no such file or directory",
			fromCopy: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"-workers", "2"}, tc.args...)
			var c *testCluster
			var bin string
			if tc.fromCopy {
				c, bin, _ = startFromCopy(t, args...)
			} else {
				c = startReloadCluster(t, nil, args...)
			}
			addr, pids := c.ready()
			if tc.fromCopy {
				if err := os.Remove(bin); err != nil {
					t.Fatal(err)
				}
			}
			checkFailedReload(t, c, addr, pids, tc.cause, tc.api)
		})
	}
}

// checkFailedReload runs the failing reloads under load and checks that
// the old generation (pids) kept serving.
func checkFailedReload(t *testing.T, c *testCluster, addr string, pids map[int]int, cause string, api bool) {
	t.Helper()
	ppid := c.cmd.Process.Pid
	l := startReloadLoad(addr, 16, false)
	defer func() {
		select {
		case <-l.stop:
		default:
			l.finish()
		}
	}()
	l.awaitGen(t, 1, 100, 10*time.Second)

	// Every worker of a failed generation is forked before the failure
	// record; gone counts those whose exit the parent has logged.
	forks, gone := 0, 0
	countGone := func(r logRecord) {
		switch {
		case r.Gen < 2 || r.Worker == 0:
		case r.Msg == "fork":
			forks++
		case r.Msg == "exit", r.Msg == "new worker failed during reload":
			gone++
		}
	}

	start := time.Now()
	c.signal(syscall.SIGHUP)
	rec := c.waitFor(30*time.Second, "reload failure record", func(r logRecord) bool {
		countGone(r)
		return r.Msg == "reload failed, the old generation keeps serving"
	})
	took := time.Since(start)
	if rec.Gen != 2 || !strings.Contains(rec.Err, cause) {
		t.Errorf("reload failure record for gen %d with err %q, want gen 2 and the cause %q", rec.Gen, rec.Err, cause)
	}
	if api {
		// The helper's parent calls Reload on SIGUSR2 and logs what it
		// returned.
		c.signal(syscall.SIGUSR2)
		rec = c.waitFor(30*time.Second, "the result of Cluster.Reload", func(r logRecord) bool {
			countGone(r)
			return r.Msg == "api reload"
		})
		if !strings.Contains(rec.Err, "gen 3") || !strings.Contains(rec.Err, cause) {
			t.Errorf("Cluster.Reload returned %q, want the failure of a gen 3 worker with the cause %q", rec.Err, cause)
		}
	}
	if gone < forks {
		c.waitFor(20*time.Second, "exit of the failed workers", func(r logRecord) bool {
			countGone(r)
			return gone >= forks
		})
	}

	// The old generation still serves, the same two processes, and they
	// are the parent's only children.
	for i := range 100 {
		a, err := getAnswer(addr, requestTimeout)
		if err != nil {
			t.Fatalf("request %d after the failed reload: %v", i, err)
		}
		if a.gen != 1 || pids[a.worker] != a.pid {
			t.Errorf("answer from worker %d pid %d gen %d after the failed reload, want gen 1 from %v", a.worker, a.pid, a.gen, pids)
		}
	}
	l.finish()
	kids, zombies := childrenOf(t, ppid)
	t.Logf("reload failed after %v; requests ok %d, failed %d; answers by generation %v; failed workers started %d, reaped %d; parent's children after %v (zombies %v)",
		took.Round(time.Millisecond), l.ok.Load(), l.fail.Load(), l.gens, forks, gone, kids, zombies)
	if n := l.fail.Load(); n > 0 {
		t.Errorf("%d requests failed; first failures:\n%s", n, strings.Join(l.errors(), "\n"))
	}
	for gen, ps := range l.pids {
		if gen != 1 {
			t.Errorf("generation %d answered (pids %v), but it should never have served", gen, ps)
		}
		for pid := range ps {
			if !slices.Contains(mapValues(pids), pid) {
				t.Errorf("pid %d answered as gen %d, but the cluster started with %v", pid, gen, pids)
			}
		}
	}
	if want := mapValues(pids); !slices.Equal(kids, want) || len(zombies) > 0 {
		t.Errorf("parent's children %v (zombies %v), want only the first workers %v", kids, zombies, want)
	}
	c.stopAndCheck()
}

// Five SIGHUPs back to back: standard signals coalesce, and a reload
// requested while one runs folds into one more, so at most two reloads
// happen, and the cluster serves from the last generation.
func TestReloadCoalescesSignals(t *testing.T) {
	c := startReloadCluster(t, nil, "-workers", "2")
	addr, _ := c.ready()
	for range 5 {
		c.signal(syscall.SIGHUP)
	}
	reloads, delivered := 0, 0
	count := func(r logRecord) bool {
		switch {
		case r.Msg == "reloading":
			reloads++
		case r.Msg == "signal": // only SIGHUPs are sent here
			delivered++
		}
		return r.Msg == reloadedMsg
	}
	rec := c.waitFor(30*time.Second, "the first reload", count)
	last := rec.Gen
	// Then until nothing more happens. A reload folded into the first is
	// announced ("reloading") in the same step as the first's "reloaded",
	// so it follows at once; the bounded wait below is only the watchdog
	// for "nothing more happens", not a synchronisation.
	for {
		if _, ok := c.next(time.Second, func(r logRecord) bool { return r.Msg == "reloading" }); !ok {
			break
		}
		reloads++
		if reloads > 2 {
			break
		}
		rec = c.waitFor(30*time.Second, "the folded reload", count)
		last = rec.Gen
	}
	t.Logf("5 SIGHUPs sent, %d delivered before the first reload ended, %d reloads, serving generation %d", delivered, reloads, last)
	if reloads < 1 || reloads > 2 {
		t.Fatalf("%d reloads for 5 back-to-back SIGHUPs, want 1 or 2", reloads)
	}
	if last != 1+reloads {
		t.Errorf("serving generation %d after %d reloads, want %d", last, reloads, 1+reloads)
	}
	seen := make(map[int]int)
	for i := 0; seen[last] == 0; i++ {
		if i == 200 {
			t.Fatalf("no answer from generation %d in 200 requests: %v", last, seen)
		}
		a, err := getAnswer(addr, requestTimeout)
		if err != nil {
			t.Fatal(err)
		}
		seen[a.gen]++
	}
	c.stopAndCheck()
}

// lastLineWith returns the last line of output that contains s.
func (c *testCluster) lastLineWith(s string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := len(c.lines) - 1; i >= 0; i-- {
		if strings.Contains(c.lines[i], s) {
			return c.lines[i]
		}
	}
	return ""
}

// Many reloads leave nothing behind in the parent: the same number of
// descriptors, of goroutines, and of child processes, and no zombie; every
// old worker exited 0 (a data race found in a worker would make it 66).
func TestReloadLeaksNothing(t *testing.T) {
	reloads := 100
	if testing.Short() {
		reloads = 10
	}
	c := startReloadCluster(t, nil, "-workers", "2")
	c.ready()
	ppid := c.cmd.Process.Pid

	fdsBefore := openFDs(t, ppid)
	kidsBefore, zombiesBefore := childrenOf(t, ppid)
	gorBefore := c.goroutines(0)

	start := time.Now()
	var took []time.Duration
	var exits exitCounter
	for gen := 2; gen < 2+reloads; gen++ {
		took = append(took, c.reload(gen, exits.count))
	}
	total := time.Since(start)
	// Counted again once every old worker has exited and been reaped.
	exits.await(c, 2*reloads)
	fdsAfter := openFDs(t, ppid)
	kidsAfter, zombiesAfter := childrenOf(t, ppid)
	gorAfter := c.goroutines(gorBefore)

	slices.Sort(took)
	t.Logf("%d reloads in %v (each min %v, median %v, max %v); parent's descriptors %d -> %d, goroutines %d -> %d, children %d -> %d",
		reloads, total.Round(time.Millisecond), took[0].Round(time.Millisecond), took[len(took)/2].Round(time.Millisecond), took[len(took)-1].Round(time.Millisecond),
		len(fdsBefore), len(fdsAfter), gorBefore, gorAfter, len(kidsBefore), len(kidsAfter))
	if len(fdsAfter) != len(fdsBefore) {
		t.Errorf("parent's descriptors %d before, %d after %d reloads:\nbefore %v\nafter  %v", len(fdsBefore), len(fdsAfter), reloads, fdKinds(fdsBefore), fdKinds(fdsAfter))
	}
	if gorAfter != gorBefore {
		t.Errorf("parent's goroutines %d before, %d after %d reloads", gorBefore, gorAfter, reloads)
	}
	if len(kidsAfter) != 2 || len(kidsBefore) != 2 || len(zombiesBefore)+len(zombiesAfter) > 0 {
		t.Errorf("parent's children %v before, %v after (zombies %v, %v), want 2 live workers each time", kidsBefore, kidsAfter, zombiesBefore, zombiesAfter)
	}
	if len(exits.bad) > 0 {
		t.Errorf("old workers that did not exit 0: %v", exits.bad)
	}
	c.stopAndCheck()
}

// goroutines asks the helper's parent for runtime.NumGoroutine. A goroutine
// that has published its last result may not have returned yet: if the
// count is above want, it asks again, a bounded number of times, and
// returns the lowest count.
func (c *testCluster) goroutines(want int) int {
	c.t.Helper()
	lowest := -1
	for range 20 {
		c.signal(syscall.SIGUSR1)
		c.waitFor(10*time.Second, "goroutine count", func(r logRecord) bool { return r.Msg == "goroutines" })
		var rec struct{ N int }
		if err := json.Unmarshal([]byte(c.lastLineWith(`"msg":"goroutines"`)), &rec); err != nil {
			c.t.Fatal(err)
		}
		if lowest < 0 || rec.N < lowest {
			lowest = rec.N
		}
		if want == 0 || lowest <= want {
			break
		}
	}
	return lowest
}

// openFDs returns what each open descriptor of process pid refers to.
func openFDs(t *testing.T, pid int) map[int]string {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	fds := make(map[int]string)
	for _, e := range ents {
		fd, _ := strconv.Atoi(e.Name())
		link, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			continue // closed meanwhile
		}
		fds[fd] = link
	}
	return fds
}

// fdKinds counts descriptors by kind ("socket", "pipe", "anon_inode:[pidfd]", a path).
func fdKinds(fds map[int]string) map[string]int {
	kinds := make(map[string]int)
	for _, link := range fds {
		kind, _, _ := strings.Cut(link, ":[")
		if strings.HasPrefix(link, "anon_inode:") {
			kind = link
		}
		kinds[kind]++
	}
	return kinds
}

// childrenOf returns the pids of ppid's child processes, sorted, and those
// of them that are zombies (state Z). It reads /proc/<ppid>/task/*/children
// where the kernel has them (CONFIG_PROC_CHILDREN), and scans every
// /proc/<pid>/stat for the parent pid where it does not.
func childrenOf(t *testing.T, ppid int) (kids, zombies []int) {
	t.Helper()
	files, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", ppid))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) > 0 {
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				continue // the thread is gone
			}
			for _, field := range strings.Fields(string(data)) {
				pid, _ := strconv.Atoi(field)
				kids = append(kids, pid)
			}
		}
	} else {
		ents, err := os.ReadDir("/proc")
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			if pid, err := strconv.Atoi(e.Name()); err == nil {
				if _, parent, ok := procStat(pid); ok && parent == ppid {
					kids = append(kids, pid)
				}
			}
		}
	}
	slices.Sort(kids)
	kids = slices.Compact(kids)
	for _, pid := range kids {
		if state, _, ok := procStat(pid); ok && state == "Z" {
			zombies = append(zombies, pid)
		}
	}
	return kids, zombies
}

// procStat returns the state and parent pid of process pid, from
// /proc/<pid>/stat; ok is false if it is gone.
func procStat(pid int) (state string, ppid int, ok bool) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", 0, false
	}
	// pid (comm) state ppid ...; comm may hold spaces and parentheses.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return "", 0, false
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 2 {
		return "", 0, false
	}
	ppid, _ = strconv.Atoi(f[1])
	return f[0], ppid, true
}

// mapValues returns m's values, sorted.
func mapValues(m map[int]int) []int {
	var vs []int
	for _, v := range m {
		vs = append(vs, v)
	}
	slices.Sort(vs)
	return vs
}

// Cluster.Reload calls waiting when the cluster stops are all answered,
// with ErrServerClosed: the call whose reload is running, and the call that
// was folded into the reload after it. The new generation never becomes
// ready here, so the stop comes in the middle of the reload.
func TestReloadCallsAnsweredOnStop(t *testing.T) {
	c := startReloadCluster(t, nil, "-workers", "2", "-slow-from-gen", "2", "-reload-timeout", "10s", "-stop-timeout", "5s")
	c.ready()
	c.signal(syscall.SIGUSR2)
	c.waitFor(10*time.Second, "the reload by Cluster.Reload", func(r logRecord) bool {
		return r.Msg == "reloading" && r.Gen == 2
	})
	c.signal(syscall.SIGUSR2)
	c.waitFor(10*time.Second, "the second Cluster.Reload call", func(r logRecord) bool { return r.Msg == "api reload call" })
	// The second call reaches the idle supervisor microseconds after that
	// record; the SIGTERM takes the long way (pipe, this process, kill,
	// signal delivery). Should it ever win, the test passes without
	// testing the folded call: it cannot fail falsely.
	c.signal(syscall.SIGTERM)
	var errs []string
	c.waitFor(20*time.Second, "the results of both Cluster.Reload calls", func(r logRecord) bool {
		if r.Msg == "api reload" {
			errs = append(errs, r.Err)
		}
		return len(errs) == 2
	})
	for i, err := range errs {
		if err != "prefork: cluster closed" {
			t.Errorf("Reload call %d returned %q after the stop, want ErrServerClosed", i+1, err)
		}
	}
	if code := c.wait(20 * time.Second); code != 0 {
		t.Errorf("parent exit code %d, want 0", code)
	}
}
