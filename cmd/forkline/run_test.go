//go:build linux

package main

// forkline run, end to end: the forkline binary (built once, with -race
// when the tests run with it) runs real programs as its workers — the
// examples in examples/anylang (a Python standard-library server, a Node
// http server, a WSGI app under gunicorn) and testdata's — on real sockets
// on 127.0.0.1. The tests wait for events (a line of the parent's log, an
// answer, an exit); their timeouts are watchdogs. A case whose program is
// missing skips.

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// reloads is how many reloads the reload tests run under load; gunicorn's
// masters take most of a second each to start (two per reload), so it gets
// gunicornReloads, to keep the run near a minute on two CPUs.
const reloads, gunicornReloads = 10, 5

// loadFresh and loadKeepAlive are the reload tests' clients: each asks
// without pause, on a fresh connection per request or on one it keeps.
const loadFresh, loadKeepAlive = 2, 2

// startWatchdog bounds the wait for a start, a reload or a stop: forkline
// gives a worker DefaultReadyTimeout (30 s) to be ready.
const startWatchdog = 30 * time.Second

func TestRun(t *testing.T) {
	bin := buildForkline(t)
	// Every case has a cluster of its own on a port of its own and spends
	// most of its time waiting for processes: three run at once. (Not
	// t.Parallel, which -parallel, GOMAXPROCS by default, bounds; t.Run
	// may be called from several goroutines.) The reloads under load, the
	// longest and the heaviest, run one after the other, beside the rest.
	sem := make(chan struct{}, 3)
	one := func(test func(*testing.T, string)) func(*testing.T) {
		return func(t *testing.T) {
			sem <- struct{}{}
			defer func() { <-sem }()
			test(t, bin)
		}
	}
	leaf := func(prog progFunc, test func(*testing.T, string, program)) (string, func(*testing.T)) {
		p, missing := prog()
		return p.name, one(func(t *testing.T, bin string) {
			if missing != "" {
				t.Skip(missing)
			}
			test(t, bin, p)
		})
	}
	each := func(progs []progFunc, test func(*testing.T, string, program)) func(*testing.T) {
		return func(t *testing.T) {
			var wg sync.WaitGroup
			for _, prog := range progs {
				name, f := leaf(prog, test)
				wg.Go(func() { t.Run(name, f) })
			}
			wg.Wait()
		}
	}
	all := []progFunc{stdlibProgram, nodeProgram, gunicornProgram}
	var wg sync.WaitGroup
	run := func(name string, f func(*testing.T)) { wg.Go(func() { t.Run(name, f) }) }
	run("Reloads", func(t *testing.T) {
		for _, prog := range all {
			t.Run(leaf(prog, testReloads))
		}
	})
	run("GunicornBrokenReload", one(testBrokenReload))
	run("ServeAndDrain", each([]progFunc{gunicornProgram, gunicornPlainProgram, stdlibProgram, nodeProgram}, testServeAndDrain))
	run("KilledWorker", each(all[:2], testKilled))
	run("FailsAtStart", one(testFailsAtStart))
	run("Environment", one(testEnvironment))
	wg.Wait()
}

// buildForkline builds the forkline binary into t's temporary directory.
func buildForkline(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "forkline")
	args := []string{"build", "-o", bin}
	if raceBuild {
		args = append(args, "-race")
	}
	out, err := exec.Command("go", append(args, ".")...).CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// A program is what forkline run runs as its workers.
type program struct {
	name  string
	flags []string // forkline run's own, before --
	argv  []string
	dir   string
}

func examplesDir() string {
	dir, _ := filepath.Abs(filepath.Join("..", "..", "examples", "anylang"))
	return dir
}

var python3 = sync.OnceValue(func() string {
	// The interpreter itself, not a shim in front of it (pyenv's adds
	// seconds to every start).
	if _, err := exec.LookPath("python3"); err != nil {
		return ""
	}
	out, err := exec.Command("python3", "-c", "import sys; print(sys.executable)").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
})

// A progFunc gives a program, or why it cannot run here.
type progFunc func() (p program, missing string)

func stdlibProgram() (program, string) {
	p := program{name: "python", argv: []string{python3(), "stdlib_server.py"}, dir: examplesDir()}
	if python3() == "" {
		return p, "no python3"
	}
	return p, ""
}

func nodeProgram() (program, string) {
	node, err := exec.LookPath("node")
	p := program{name: "node", flags: []string{"-ready", "after=300ms"}, argv: []string{node, "server.js"}, dir: examplesDir()}
	if err != nil {
		return p, "no node"
	}
	return p, ""
}

// gunicornProgram runs app.py with forkline.conf.py, whose worker says
// READY=1 once it has loaded the app (see the file).
func gunicornProgram() (program, string) {
	p, missing := gunicornPlainProgram()
	p.name = "gunicorn"
	p.argv = slices.Insert(p.argv, 1, "-c", "forkline.conf.py")
	return p, missing
}

// gunicornPlainProgram is gunicorn with no settings: it adopts the socket
// and says READY=1 (too early: see forkline.conf.py) by itself.
func gunicornPlainProgram() (program, string) {
	g, err := exec.LookPath("gunicorn")
	p := program{name: "gunicorn-plain", argv: []string{g, "-w", "1", "app:app"}, dir: examplesDir()}
	if err != nil {
		return p, "no gunicorn"
	}
	return p, ""
}

// runCluster is a running `forkline run`.
type runCluster struct {
	t      *testing.T
	cmd    *exec.Cmd
	addr   string
	stderr *lineLog // the parent's log (JSON unless text) and the workers' stderr
	stdout *lineLog // the workers' stdout
	exited chan struct{}
	state  *os.ProcessState
}

// startRun starts forkline run with p (JSON logs, 2 workers on a port of
// its own) and waits until the cluster is ready.
func startRun(t *testing.T, bin string, p program, env []string, flags ...string) *runCluster {
	t.Helper()
	c := launch(t, bin, p, env, append([]string{"-log", "json"}, flags...)...)
	rec := c.stderr.wait(t, 0, `"cluster ready"`, func(r logRec) bool { return r.msg() == "cluster ready" || r.exited })
	if rec.exited {
		t.Fatalf("forkline run exited before the cluster was ready: %v\n%s", c.state, c.stderr.text())
	}
	c.addr = rec.str("addr")
	return c
}

// launch starts forkline run with p; it returns at once.
func launch(t *testing.T, bin string, p program, env []string, flags ...string) *runCluster {
	t.Helper()
	// A drain may be slow on a loaded machine: 25 s before forkline kills
	// (a worker killed so still fails the test: checkLog).
	args := append([]string{"run", "-addr", "127.0.0.1:0", "-workers", "2", "-stop-timeout", "25s"}, p.flags...)
	args = append(append(append(args, flags...), "--"), p.argv...)
	cmd := exec.Command(bin, args...)
	cmd.Dir = p.dir
	cmd.Env = append(cleanEnv(), env...)
	// Should this test binary die, the cluster stops fast (its workers are
	// killed) rather than outlive it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGQUIT}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	c := &runCluster{t: t, cmd: cmd, stderr: newLineLog(), stdout: newLineLog(), exited: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var readers sync.WaitGroup
	readers.Go(func() { c.stdout.read(stdout) })
	readers.Go(func() { c.stderr.read(stderr) })
	go func() {
		readers.Wait()
		cmd.Wait()
		c.state = cmd.ProcessState
		c.stderr.exit()
		c.stdout.exit()
		close(c.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-c.exited:
		default:
			cmd.Process.Signal(syscall.SIGQUIT) // a fast stop: the workers are killed
			select {
			case <-c.exited:
			case <-time.After(watchdog):
				cmd.Process.Kill()
				<-c.exited
			}
		}
		if t.Failed() {
			t.Logf("forkline run's stderr:\n%s", c.stderr.text())
		}
		if strings.Contains(c.stderr.text(), "WARNING: DATA RACE") {
			t.Errorf("the forkline binary found a data race:\n%s", c.stderr.text())
		}
	})
	return c
}

// cleanEnv is the test's environment without what would make the parent
// take itself for a service manager's child or a worker.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(name, "LISTEN_"), strings.HasPrefix(name, "WATCHDOG_"), strings.HasPrefix(name, "FORKLINE_"),
			name == "NOTIFY_SOCKET", name == "FDSTORE", name == "RUNTIME_DIRECTORY", name == "PORT":
		default:
			env = append(env, kv)
		}
	}
	return append(env, "PYTHONDONTWRITEBYTECODE=1")
}

func (c *runCluster) signal(sig syscall.Signal) {
	c.t.Helper()
	if err := c.cmd.Process.Signal(sig); err != nil {
		c.t.Fatalf("signal %v to forkline run: %v", sig, err)
	}
}

// wait waits for forkline run to exit and returns its exit status.
func (c *runCluster) wait() int {
	c.t.Helper()
	select {
	case <-c.exited:
	case <-time.After(startWatchdog):
		c.t.Fatalf("forkline run did not exit\n%s", c.stderr.text())
	}
	return c.state.ExitCode()
}

// stop stops the cluster with SIGTERM and checks that it exits 0.
func (c *runCluster) stop() {
	c.t.Helper()
	c.signal(syscall.SIGTERM)
	if code := c.wait(); code != 0 {
		c.t.Errorf("forkline run exited %d after SIGTERM, want 0", code)
	}
}

// checkLog fails the test for log lines that say something went wrong
// with a worker.
func (c *runCluster) checkLog() {
	c.t.Helper()
	bad := []string{"worker died, replacing it", "worker failed at start", "reload failed, the old generation keeps serving",
		"worker not ready in time, killing it", "worker still running after its grace, killing it", "new worker failed during reload"}
	for _, r := range c.stderr.records() {
		if slices.Contains(bad, r.msg()) || strings.Contains(r.str("line"), "Traceback") {
			c.t.Errorf("forkline run logged: %s", r.raw)
		}
	}
}

// A logRec is a line of forkline run's stderr, with its JSON fields when
// it has some (the parent's log, a worker's line).
type logRec struct {
	raw    string
	fields map[string]any
	exited bool // no line: forkline run has exited
}

func (r logRec) str(key string) string {
	s, _ := r.fields[key].(string)
	return s
}

func (r logRec) num(key string) int {
	f, _ := r.fields[key].(float64)
	return int(f)
}

func (r logRec) msg() string { return r.str("msg") }

// lineLog keeps the lines of a stream as they come.
type lineLog struct {
	mu    sync.Mutex
	lines []logRec
	more  chan struct{} // closed and replaced at each line
	eof   bool
}

func newLineLog() *lineLog { return &lineLog{more: make(chan struct{})} }

func (l *lineLog) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		rec := logRec{raw: sc.Text()}
		json.Unmarshal(sc.Bytes(), &rec.fields)
		l.mu.Lock()
		l.lines = append(l.lines, rec)
		close(l.more)
		l.more = make(chan struct{})
		l.mu.Unlock()
	}
	io.Copy(io.Discard, r)
}

func (l *lineLog) exit() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.eof = true
	close(l.more)
	l.more = make(chan struct{})
}

func (l *lineLog) records() []logRec {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.lines)
}

func (l *lineLog) text() string {
	var b strings.Builder
	for _, r := range l.records() {
		b.WriteString(r.raw)
		b.WriteByte('\n')
	}
	return b.String()
}

// wait waits for the first line from index from on that matches, or for
// the end of the stream (a record with exited set, if match takes it).
func (l *lineLog) wait(t *testing.T, from int, what string, match func(logRec) bool) logRec {
	t.Helper()
	_, r := l.waitIndex(t, from, what, match)
	return r
}

func (l *lineLog) waitIndex(t *testing.T, from int, what string, match func(logRec) bool) (int, logRec) {
	t.Helper()
	timeout := time.After(startWatchdog)
	for i := from; ; {
		l.mu.Lock()
		for ; i < len(l.lines); i++ {
			if match(l.lines[i]) {
				r := l.lines[i]
				l.mu.Unlock()
				return i, r
			}
		}
		eof, more := l.eof, l.more
		l.mu.Unlock()
		if eof {
			if match(logRec{exited: true}) {
				return i, logRec{exited: true}
			}
			t.Fatalf("forkline run exited before it logged %s", what)
		}
		select {
		case <-more:
		case <-timeout:
			t.Fatalf("forkline run did not log %s within %v", what, startWatchdog)
		}
	}
}

// answer is what the example programs answer: worker=ID pid=PID gen=GEN.
type answer struct{ worker, pid, gen int }

var answerRE = regexp.MustCompile(`^worker=(\d+) pid=(\d+) gen=(\d+)\n$`)

func parseAnswer(body string) (answer, error) {
	m := answerRE.FindStringSubmatch(body)
	if m == nil {
		return answer{}, fmt.Errorf("unexpected answer %q", body)
	}
	a := answer{}
	a.worker, _ = strconv.Atoi(m[1])
	a.pid, _ = strconv.Atoi(m[2])
	a.gen, _ = strconv.Atoi(m[3])
	return a, nil
}

// get asks for path on a connection of its own.
func get(addr, path string) (string, error) { return getWithin(addr, path, watchdog) }

// getWithin is get with a deadline of d from now.
func getWithin(addr, path string, d time.Duration) (string, error) {
	conn, err := net.DialTimeout("tcp", addr, d)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(d))
	return roundTrip(conn, path)
}

// roundTrip sends one GET on conn, the connection's only, and reads its
// answer.
func roundTrip(conn net.Conn, path string) (string, error) {
	if _, err := io.WriteString(conn, "GET "+path+" HTTP/1.1\r\nHost: forkline.test\r\nConnection: close\r\n\r\n"); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return "", err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: %q", resp.Status, body)
	}
	return string(body), nil
}

func getAnswer(t *testing.T, addr, path string) answer {
	t.Helper()
	body, err := get(addr, path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	a, err := parseAnswer(body)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// both asks on fresh connections (at most 200) until both workers have
// answered, and returns them by worker id.
func both(t *testing.T, addr string) map[int]answer {
	t.Helper()
	seen := map[int]answer{}
	for range 200 {
		a := getAnswer(t, addr, "/")
		seen[a.worker] = a
		if len(seen) == 2 {
			return seen
		}
	}
	t.Fatalf("200 connections reached only %v", seen)
	return nil
}

// checkGone checks that the processes that answered are gone once forkline
// run has exited.
func checkGone(t *testing.T, as []answer) {
	t.Helper()
	for _, a := range as {
		if err := syscall.Kill(a.pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("worker %d's pid %d still exists after forkline run exited (kill 0: %v)", a.worker, a.pid, err)
		}
	}
}

func testKilled(t *testing.T, bin string, p program) {
	c := startRun(t, bin, p, nil, "-v") // -v: the log says when a worker is ready ("listening")
	seen := both(t, c.addr)
	victim := seen[1]
	if err := syscall.Kill(victim.pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// Connections right after the kill: those the kernel queues on the dead
	// worker's socket wait there for its replacement.
	const n = 16
	conns := make([]net.Conn, n)
	for i := range conns {
		conn, err := net.DialTimeout("tcp", c.addr, watchdog)
		if err != nil {
			t.Fatalf("connection %d after the kill: %v", i, err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(watchdog))
		conns[i] = conn
	}
	answers := make(chan string, n)
	for _, conn := range conns {
		go func() {
			body, err := roundTrip(conn, "/")
			if err != nil {
				body = "error: " + err.Error()
			}
			answers <- body
		}()
	}
	byWorker := map[int]int{}
	for range n {
		body := <-answers // each conn has its deadline: the watchdog
		a, err := parseAnswer(body)
		if err != nil {
			t.Errorf("a connection opened after the kill: %v", err)
			continue
		}
		if a.pid == victim.pid {
			t.Errorf("the killed worker (pid %d) answered", victim.pid)
		}
		byWorker[a.worker]++
	}
	t.Logf("%d connections opened right after worker 1 (pid %d) was killed: answered by worker %v", n, victim.pid, byWorker)
	died, _ := c.stderr.waitIndex(t, 0, "worker 1's death", func(r logRec) bool {
		return r.msg() == "worker died, replacing it" && r.num("pid") == victim.pid
	})
	ready := c.stderr.wait(t, died, "worker 1's replacement ready", func(r logRec) bool {
		return r.msg() == "listening" && r.num("worker") == 1
	})
	var repl answer
	for range 200 {
		if a := getAnswer(t, c.addr, "/"); a.worker == 1 {
			repl = a
			break
		}
	}
	if repl.pid == 0 || repl.pid == victim.pid || repl.pid != ready.num("pid") {
		t.Fatalf("worker 1 was not replaced: answered %+v; killed pid %d, replacement %s", repl, victim.pid, ready.raw)
	}
	c.stop()
}

func testFailsAtStart(t *testing.T, bin string) {
	cases := []struct {
		name string
		prog progFunc
		want string // in the error's last line
	}{
		{"python", func() (program, string) {
			p, missing := stdlibProgram()
			p.argv = []string{p.argv[0], "-c", "import sys; print('boom: bad config', file=sys.stderr); sys.exit(3)"}
			return p, missing
		}, "boom: bad config"},
		{"gunicorn", func() (program, string) {
			p, missing := gunicornProgram()
			p.argv[len(p.argv)-1] = "no_such_module:app"
			return p, missing
		}, "No module named 'no_such_module'"},
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	for _, tc := range cases {
		wg.Go(func() {
			t.Run(tc.name, func(t *testing.T) {
				p, missing := tc.prog()
				if missing != "" {
					t.Skip(missing)
				}
				start := time.Now()
				c := launch(t, bin, p, nil) // text output: worker lines prefixed [w<id> <pid>]
				code := c.wait()
				took := time.Since(start)
				if code == 0 {
					t.Fatalf("forkline run exited 0 for a program that fails")
				}
				lines := strings.Split(strings.TrimSpace(c.stderr.text()), "\n")
				last := lines[len(lines)-1]
				if !strings.HasPrefix(last, "forkline run: ") || !strings.Contains(last, tc.want) {
					t.Errorf("forkline run's last line is %q, want the error with %q", last, tc.want)
				}
				prefixed := regexp.MustCompile(`(?m)^\[w[12] \d+\] .*` + regexp.QuoteMeta(tc.want) + `$`)
				if !prefixed.MatchString(c.stderr.text()) {
					t.Errorf("no line [w<id> <pid>] ...%s on forkline run's stderr", tc.want)
				}
				// It fails as the program exits: not on ReadyTimeout (30 s),
				// nor after retries (c.wait's watchdog is that bound).
				if !strings.Contains(last, "exited before it was ready") {
					t.Errorf("forkline run's error is not the program's exit: %q", last)
				}
				t.Logf("exit status %d after %v: %s", code, took.Round(time.Millisecond), last)
			})
		})
	}
}

// envReport is what testdata/env.py reports.
type envReport struct {
	PID int               `json:"pid"`
	FDs map[string]string `json:"fds"`
	Env map[string]string `json:"env"`
	FD3 struct {
		Family     int  `json:"family"`
		Type       int  `json:"type"`
		AcceptConn int  `json:"acceptconn"`
		Port       int  `json:"port"`
		NonBlock   bool `json:"nonblocking"`
	} `json:"fd3"`
}

func testEnvironment(t *testing.T, bin string) {
	py := python3()
	if py == "" {
		t.Skip("no python3")
	}
	dir, err := filepath.Abs("testdata")
	if err != nil {
		t.Fatal(err)
	}
	// The parent runs with a notify socket of its own, as under systemd: it
	// must keep it to itself.
	parentNotify := filepath.Join(t.TempDir(), "notify.sock")
	ns, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: parentNotify, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	c := startRun(t, bin, program{argv: []string{py, "env.py"}, dir: dir}, []string{"NOTIFY_SOCKET=" + parentNotify})
	_, portStr, _ := net.SplitHostPort(c.addr)
	port, _ := strconv.Atoi(portStr)

	reports := map[int]envReport{}
	for i := 0; len(reports) < 2; i++ {
		if i == 200 {
			t.Fatalf("200 connections reached only workers %v", slices.Collect(maps.Keys(reports)))
		}
		body, err := get(c.addr, "/")
		if err != nil {
			t.Fatal(err)
		}
		var r envReport
		if err := json.Unmarshal([]byte(body), &r); err != nil {
			t.Fatalf("%v: %q", err, body)
		}
		id, _ := strconv.Atoi(r.Env["FORKLINE_WORKER_ID"])
		reports[id] = r
	}
	for id, r := range reports {
		if id != 1 && id != 2 {
			t.Errorf("FORKLINE_WORKER_ID=%q", r.Env["FORKLINE_WORKER_ID"])
		}
		want := map[string]string{
			"LISTEN_PID": strconv.Itoa(r.PID), "LISTEN_FDS": "1", "LISTEN_FDNAMES": "main",
			"EINHORN_FD_0": "3", "EINHORN_FD_COUNT": "1", "PORT": portStr, "FORKLINE_GENERATION": "1",
		}
		for k, v := range want {
			if got, ok := r.Env[k]; got != v || !ok {
				t.Errorf("worker %d: %s=%q, want %q", id, k, got, v)
			}
		}
		for _, k := range []string{"FORKLINE_EXEC", "FORKLINE_WORKER", "FORKLINE_PARENT"} {
			if v, ok := r.Env[k]; ok {
				t.Errorf("worker %d sees %s=%q", id, k, v)
			}
		}
		if ns := r.Env["NOTIFY_SOCKET"]; ns == "" || ns == parentNotify {
			t.Errorf("worker %d: NOTIFY_SOCKET=%q, want one of its own (the parent's is %s)", id, ns, parentNotify)
		}
		var extra []string
		for fd, target := range r.FDs {
			if n, _ := strconv.Atoi(fd); n > 3 {
				extra = append(extra, fd+" -> "+target)
			}
		}
		if len(extra) > 0 || !strings.HasPrefix(r.FDs["3"], "socket:") {
			t.Errorf("worker %d: fd 3 is %q, and descriptors above it: %v; want a socket at 3, nothing above", id, r.FDs["3"], extra)
		}
		if r.FD3.Family != syscall.AF_INET || r.FD3.Type != syscall.SOCK_STREAM || r.FD3.AcceptConn != 1 || r.FD3.Port != port {
			t.Errorf("worker %d: fd 3 is %+v, want a listening TCP/IPv4 socket on port %d", id, r.FD3, port)
		}
		var more []string // logged, not checked
		for k, v := range r.Env {
			if strings.HasPrefix(k, "FORKLINE_") || k == "GOMAXPROCS" {
				more = append(more, k+"="+v)
			}
		}
		slices.Sort(more)
		t.Logf("worker %d (pid %d): NOTIFY_SOCKET=%s, fds %v, fd 3 O_NONBLOCK %v; also %v",
			id, r.PID, r.Env["NOTIFY_SOCKET"], r.FDs, r.FD3.NonBlock, more)
	}
	if reports[1].Env["NOTIFY_SOCKET"] == reports[2].Env["NOTIFY_SOCKET"] {
		t.Errorf("both workers have NOTIFY_SOCKET=%s", reports[1].Env["NOTIFY_SOCKET"])
	}
	// The parent itself speaks to its own: READY=1 once the cluster is.
	ns.SetReadDeadline(time.Now().Add(watchdog))
	buf := make([]byte, 4096)
	for {
		n, err := ns.Read(buf)
		if err != nil {
			t.Fatalf("the parent sent no READY=1 to its NOTIFY_SOCKET: %v", err)
		}
		if slices.Contains(strings.Split(string(buf[:n]), "\n"), "READY=1") {
			break
		}
	}
	c.stop()
}

// testServeAndDrain: both workers answer (two pids over at most 200 fresh
// connections), then SIGTERM to the parent while a slow request is in
// flight: it is answered, and forkline run exits 0.
func testServeAndDrain(t *testing.T, bin string, p program) {
	c := startRun(t, bin, p, nil)
	seen := both(t, c.addr)
	if seen[1].pid == seen[2].pid || seen[1].pid == 0 {
		t.Errorf("workers 1 and 2 answered with pids %d and %d, want two", seen[1].pid, seen[2].pid)
	}
	for id, a := range seen {
		if a.gen != 1 {
			t.Errorf("worker %d: gen %d, want 1", id, a.gen)
		}
	}
	type result struct {
		body string
		err  error
	}
	done := make(chan result, 1)
	go func() {
		body, err := get(c.addr, "/slow?ms=500")
		done <- result{body, err}
	}()
	// The program prints it as its handler starts to sleep.
	c.stdout.wait(t, 0, "the slow request's start", func(r logRec) bool { return strings.HasPrefix(r.str("line"), "slow request") })
	c.signal(syscall.SIGTERM)
	start := time.Now()
	var r result
	select {
	case r = <-done:
	case <-time.After(watchdog):
		t.Fatal("no answer to the slow request")
	}
	if r.err != nil {
		t.Fatalf("the request in flight at SIGTERM: %v", r.err)
	}
	if _, err := parseAnswer(r.body); err != nil {
		t.Fatal(err)
	}
	answeredAfter := time.Since(start)
	if code := c.wait(); code != 0 {
		t.Errorf("forkline run exited %d after SIGTERM, want 0", code)
	}
	t.Logf("pids %d and %d answered; the slow request was answered %v after SIGTERM; forkline run exited 0 after %v",
		seen[1].pid, seen[2].pid, answeredAfter.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	c.checkLog()
	checkGone(t, slices.Collect(maps.Values(seen)))
}

// testBrokenReload: with forkline.conf.py, a gunicorn worker is ready once
// it has imported the app, so a reload to an app that cannot be imported
// fails and the old generation keeps serving.
func testBrokenReload(t *testing.T, bin string) {
	p, missing := gunicornProgram()
	if missing != "" {
		t.Skip(missing)
	}
	p.dir = t.TempDir()
	for _, name := range []string{"app.py", "forkline.conf.py"} {
		b, err := os.ReadFile(filepath.Join(examplesDir(), name))
		if err == nil {
			err = os.WriteFile(filepath.Join(p.dir, name), b, 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	appPath := filepath.Join(p.dir, "app.py")
	c := startRun(t, bin, p, nil)
	before := both(t, c.addr)
	if err := os.WriteFile(appPath, []byte("raise RuntimeError('boom: bad deploy')\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c.signal(syscall.SIGHUP)
	rec := c.stderr.wait(t, 0, `"reload failed"`, func(r logRec) bool {
		return r.msg() == "reload failed, the old generation keeps serving" || r.msg() == "reloaded"
	})
	if rec.msg() != "reload failed, the old generation keeps serving" || !strings.Contains(rec.str("err"), "boom: bad deploy") {
		t.Fatalf("after a reload to an app that raises: %s", rec.raw)
	}
	after := both(t, c.addr)
	if !maps.Equal(before, after) {
		t.Errorf("the workers were %v before the failed reload, %v after", before, after)
	}
	c.stop()
}

// load is clients that ask without pause until stopped: fresh ones, a
// connection per request, and keep-alive ones.
type load struct {
	addr string
	stop chan struct{}
	wg   sync.WaitGroup

	fresh, kept, failed, retried atomic.Int64
	slowest                      atomic.Int64 // nanoseconds: the longest a request waited for its answer

	mu   sync.Mutex
	errs []string
	gens map[int]int // answers per generation
	more chan struct{}
}

func startLoad(addr string, fresh, keepAlive int) *load {
	l := &load{addr: addr, stop: make(chan struct{}), gens: map[int]int{}, more: make(chan struct{})}
	for range fresh {
		l.wg.Go(l.freshClient)
	}
	for range keepAlive {
		l.wg.Go(l.keepAliveClient)
	}
	return l
}

func (l *load) stopped() bool {
	select {
	case <-l.stop:
		return true
	default:
		return false
	}
}

func (l *load) end() {
	close(l.stop)
	l.wg.Wait()
}

func (l *load) fail(format string, args ...any) {
	l.failed.Add(1)
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.errs) < 10 {
		l.errs = append(l.errs, fmt.Sprintf(format, args...))
	}
}

func (l *load) answered(body string, n *atomic.Int64) {
	a, err := parseAnswer(body)
	if err != nil {
		l.fail("%v", err)
		return
	}
	n.Add(1)
	l.mu.Lock()
	l.gens[a.gen]++
	close(l.more)
	l.more = make(chan struct{})
	l.mu.Unlock()
}

// waitGen waits for an answer from generation gen.
func (l *load) waitGen(t *testing.T, gen int) {
	t.Helper()
	timeout := time.After(startWatchdog)
	for {
		l.mu.Lock()
		n, more := l.gens[gen], l.more
		l.mu.Unlock()
		if n > 0 {
			return
		}
		select {
		case <-more:
		case <-timeout:
			t.Fatalf("no answer from generation %d within %v", gen, startWatchdog)
		}
	}
}

// took records how long a request waited.
func (l *load) took(start time.Time) {
	d := int64(time.Since(start))
	for {
		old := l.slowest.Load()
		if d <= old || l.slowest.CompareAndSwap(old, d) {
			return
		}
	}
}

// The clients' requests may wait: a request is lost only when it fails,
// or gets no answer within startWatchdog (a new generation may be ready
// before it accepts: -ready after=).
func (l *load) freshClient() {
	for !l.stopped() {
		start := time.Now()
		body, err := getWithin(l.addr, "/", startWatchdog)
		l.took(start)
		if err != nil {
			l.fail("fresh connection: %v", err)
			continue
		}
		l.answered(body, &l.fresh)
	}
}

// keepAliveClient asks on one connection until an answer says Connection:
// close, then on a new one. A request on a reused connection that the
// server closed before it read it — the connection ends (EOF or reset)
// before any byte of an answer — is the case RFC 9110 §9.2.2 lets a client
// retry when the request is idempotent, and clients do (Go's http.Transport,
// browsers): it is counted apart, as retried, and asked again at once on a
// new connection. Everything else is a failure.
func (l *load) keepAliveClient() {
	var kc *kaConn
	defer func() { kc.close() }()
	for retry := false; retry || !l.stopped(); {
		retry = false
		if kc == nil {
			var err error
			if kc, err = dialKA(l.addr); err != nil {
				l.fail("keep-alive dial: %v", err)
				continue
			}
		}
		start := time.Now()
		body, closed, err := kc.get("/")
		l.took(start)
		switch {
		case err == nil:
			l.answered(body, &l.kept)
			if closed {
				kc.close()
				kc = nil
			}
		case kc.served > 0 && kc.read == 0 && closedUnread(err):
			l.retried.Add(1)
			kc.close()
			kc, retry = nil, true
		default:
			l.fail("keep-alive connection, request %d on it (%d bytes of the answer read): %v", kc.served+1, kc.read, err)
			kc.close()
			kc = nil
		}
	}
}

// closedUnread: the connection ended under a request the server never read.
func closedUnread(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// kaConn is a keep-alive connection that counts what it reads.
type kaConn struct {
	net.Conn
	br     *bufio.Reader
	served int   // answers on it so far
	read   int64 // bytes read since the last request was sent
}

func dialKA(addr string) (*kaConn, error) {
	conn, err := net.DialTimeout("tcp", addr, startWatchdog)
	if err != nil {
		return nil, err
	}
	kc := &kaConn{Conn: conn}
	kc.br = bufio.NewReader(readCounter{kc})
	return kc, nil
}

type readCounter struct{ kc *kaConn }

func (r readCounter) Read(p []byte) (int, error) {
	n, err := r.kc.Conn.Read(p)
	r.kc.read += int64(n)
	return n, err
}

func (kc *kaConn) close() {
	if kc != nil {
		kc.Conn.Close()
	}
}

// get asks for path; closed says the answer closed the connection.
func (kc *kaConn) get(path string) (body string, closed bool, err error) {
	kc.read = 0
	kc.SetDeadline(time.Now().Add(startWatchdog))
	if _, err := io.WriteString(kc, "GET "+path+" HTTP/1.1\r\nHost: forkline.test\r\n\r\n"); err != nil {
		return "", false, err
	}
	resp, err := http.ReadResponse(kc.br, nil)
	if err != nil {
		return "", false, err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return "", false, err
	}
	if resp.StatusCode != http.StatusOK {
		return "", false, fmt.Errorf("%s: %q", resp.Status, b)
	}
	kc.served++
	return string(b), resp.Close, nil
}

func testReloads(t *testing.T, bin string, p program) {
	c := startRun(t, bin, p, nil)
	l := startLoad(c.addr, loadFresh, loadKeepAlive)
	defer func() {
		select {
		case <-l.stop:
		default:
			l.end()
		}
	}()
	l.waitGen(t, 1)
	start := time.Now()
	from := 0
	n := reloads
	if p.name == "gunicorn" {
		n = gunicornReloads
	}
	for gen := 2; gen <= n+1; gen++ {
		c.signal(syscall.SIGHUP)
		i, rec := c.stderr.waitIndex(t, from, fmt.Sprintf(`"reloaded" gen=%d`, gen), func(r logRec) bool {
			return r.msg() == "reloaded" || r.msg() == "reload failed, the old generation keeps serving"
		})
		if rec.msg() != "reloaded" || rec.num("gen") != gen {
			t.Fatalf("reload to generation %d: %s", gen, rec.raw)
		}
		from = i + 1
		// The new generation serves the load before the next reload.
		l.waitGen(t, gen)
	}
	took := time.Since(start)
	l.waitGen(t, n+1)
	l.end()
	c.stop()
	c.checkLog()

	l.mu.Lock()
	errs, gens := l.errs, l.gens
	l.mu.Unlock()
	t.Logf("%s: %d reloads in %v under load: %d requests answered (%d on fresh connections, %d keep-alive), %d failed, %d retried (keep-alive connection closed before the request was read), slowest answer %v; answers per generation %v",
		p.name, n, took.Round(time.Millisecond), l.fresh.Load()+l.kept.Load(), l.fresh.Load(), l.kept.Load(),
		l.failed.Load(), l.retried.Load(), time.Duration(l.slowest.Load()).Round(time.Millisecond), gens)
	if l.failed.Load() > 0 {
		t.Errorf("%d requests failed: %s", l.failed.Load(), strings.Join(errs, "; "))
	}
	// A client may retry those, but these servers' drains need no retry:
	// they answer whatever request comes on a connection with Connection:
	// close, and close only a connection idle for a second (the clients
	// here never idle). Node's plain server.close() closes idle keep-alive
	// connections at once: 16 and 18 retries over 10 reloads, measured.
	if n := l.retried.Load(); n > 0 {
		t.Errorf("%d requests met a keep-alive connection closed before the request was read", n)
	}
}
