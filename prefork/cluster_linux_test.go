package prefork_test

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/forkline/forkline/prefork"
)

// Two workers, 2,000 requests on fresh connections: the kernel spreads
// them, each worker serves at least 35%.
func TestSpreadAcrossWorkers(t *testing.T) {
	t.Parallel()
	c := startCluster(t, "-workers", "2")
	addr, _ := c.ready()
	counts := make(map[int]int)
	const n = 2000
	for range n {
		counts[mustGet(t, addr).worker]++
	}
	t.Logf("requests per worker: %v", counts)
	for id := 1; id <= 2; id++ {
		if counts[id] < n*35/100 {
			t.Errorf("worker %d served %d of %d requests, want at least 35%%", id, counts[id], n)
		}
	}
	c.stopAndCheck()
}

// SIGKILL a worker while 32 clients keep requesting, with connections
// waiting in its slot's accept queue: the replacement takes the same slot
// and socket, and no queued connection fails. Only the requests the dead
// worker had already accepted may fail.
func TestKilledWorkerLosesNoQueuedConnection(t *testing.T) {
	// Not parallel: beside the other tests' load it saw up to 26 requests
	// reset or unanswered in 2 of about 6 full runs here, never alone; why
	// is not found yet. Alone, its figures are the ones it was written for.
	c := startCluster(t, "-workers", "2")
	addr, pids := c.ready()
	port := portOf(t, addr)
	victim := pids[1]

	const clients, wantQueued = 32, 16
	l := startLoad(addr, clients, false)
	defer l.finish()
	l.awaitOK(t, 200, 20*time.Second)

	// Freeze worker 1, so that the connections the kernel gives to its
	// slot queue up, and wait until the kernel reports a queue (or until
	// every client is stuck on slot 1, queued or accepted before the stop).
	if err := syscall.Kill(victim, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	watchdog := time.NewTimer(10 * time.Second)
	defer watchdog.Stop()
	poll := time.NewTicker(time.Millisecond) // the kernel's counters have no notification
	defer poll.Stop()
	queued, held := 0, 0
	for queued < wantQueued && queued+held < clients {
		select {
		case <-poll.C:
		case <-watchdog.C:
			t.Fatalf("slot 1's accept queue did not reach %d (queues %v, held by worker 1: %d)", wantQueued, listenQueues(t, port), held)
		}
		queued = 0
		for _, q := range listenQueues(t, port) {
			queued = max(queued, q)
		}
		held = connectionsHeldBy(t, victim, port)
	}
	if queued == 0 {
		t.Fatalf("no connection queued on slot 1: the test proves nothing (held by worker 1: %d)", held)
	}
	if err := syscall.Kill(victim, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	repl := c.awaitEvent(10*time.Second, "the replacement of worker 1 listening", prefork.EventListening, func(o observation) bool {
		return o.Worker.ID == 1 && o.Worker.PID != victim
	})
	l.awaitOK(t, 5000, 60*time.Second)
	l.finish()
	ok, failed := l.counts()
	t.Logf("queued at kill: %d, accepted by the killed worker: %d; requests ok %d, failed %d; replacement pid %d",
		queued, held, ok, failed, repl.Worker.PID)
	if failed > held {
		t.Errorf("%d requests failed, but the killed worker had accepted only %d connections: queued connections were lost: %v", failed, held, l.errors())
	}
	c.stopAndCheck()
}

// SIGTERM with slow requests in flight: every one completes, the parent
// exits 0 and no process is left.
func TestGracefulStopFinishesRequests(t *testing.T) {
	t.Parallel()
	c := startCluster(t, "-workers", "2")
	addr, _ := c.ready()

	const n = 8
	inflight := make(chan struct{}, n)
	results := make(chan error, n)
	for range n {
		go func() { results <- slowRequest(addr, "1s", inflight) }()
	}
	watchdog := time.NewTimer(10 * time.Second)
	defer watchdog.Stop()
	for range n {
		select {
		case <-inflight:
		case err := <-results:
			t.Fatalf("slow request ended before the stop: %v", err)
		case <-watchdog.C:
			t.Fatal("slow requests did not start")
		}
	}
	c.signal(syscall.SIGTERM)
	for range n {
		if err := <-results; err != nil { // each is bounded by its deadline
			t.Errorf("slow request failed during graceful stop: %v", err)
		}
	}
	if code := c.wait(15 * time.Second); code != 0 {
		t.Errorf("parent exit code %d, want 0", code)
	}
	c.waitGone(10 * time.Second)
}

// SIGKILL the parent: every worker is gone within a second.
func TestWorkersDieWithParent(t *testing.T) {
	t.Parallel()
	c := startCluster(t, "-workers", "2")
	_, pids := c.ready()
	if err := c.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	c.wait(5 * time.Second)
	start := time.Now()
	for id, pid := range pids {
		if !waitProcessGone(t, pid, time.Second-time.Since(start)) {
			t.Errorf("worker %d (pid %d) still alive %v after the parent was killed", id, pid, time.Since(start))
		}
	}
	t.Logf("workers gone %v after the parent", time.Since(start))
}

// Inherit mode, forced where reuseport works: the parent's startup line
// says so (with its pid), both workers serve from the one socket, and a
// killed worker's replacement serves too.
func TestInheritMode(t *testing.T) {
	t.Parallel()
	c := startCluster(t, "-workers", "2", "-mode", "inherit")
	addr, pids := c.ready()
	rec := c.awaitLog(time.Second, "the parent's startup line", func(r logRecord) bool {
		return r.str("msg") == "listening" && r.num("worker") == 0
	})
	if rec.str("mode") != "inherit" || rec.num("parent") != c.pid {
		t.Errorf("startup line %v: want mode inherit and parent %d", rec, c.pid)
	}
	if err := syscall.Kill(pids[2], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	repl := c.awaitEvent(10*time.Second, "the replacement of worker 2 listening", prefork.EventListening, func(o observation) bool {
		return o.Worker.ID == 2 && o.Worker.PID != pids[2]
	})
	// One queue for both: the kernel wakes either worker. Both, and the
	// replacement, answer within a bounded number of requests.
	ids, byPID := make(map[int]int), make(map[int]int)
	for i := 0; ids[1] == 0 || byPID[repl.Worker.PID] == 0; i++ {
		if i == 2000 {
			t.Fatalf("after 2000 requests: answers by worker %v, by pid %v; want both workers and the replacement (pid %d)", ids, byPID, repl.Worker.PID)
		}
		a := mustGet(t, addr)
		ids[a.worker]++
		byPID[a.pid]++
	}
	if byPID[pids[2]] > 0 {
		t.Errorf("the killed worker (pid %d) answered after its replacement listened", pids[2])
	}
	c.stopAndCheck()
}

// An address that cannot be bound: Run returns at once an error that names
// the cause, before any worker starts; no process is left.
func TestBadAddress(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ addr, want string }{
		{"127.0.0.1", "missing port in address"},
		{"127.0.0.1:99999", "invalid port"},
		{"127.0.0.1:no-such-service", "unknown port"},
		{"192.0.2.1:8080", "listen tcp 192.0.2.1:8080: bind: cannot assign requested address"}, // TEST-NET-1
	} {
		t.Run(tc.addr, func(t *testing.T) {
			t.Parallel()
			c := startCluster(t, "-workers", "2", "-addr", tc.addr)
			checkRunFails(t, c, tc.want)
		})
	}
}

// A port held by a plain listener: Run fails with an error that names the
// address and the cause, and leaves no process behind.
func TestPortInUse(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c := startCluster(t, "-workers", "2", "-addr", ln.Addr().String())
	checkRunFails(t, c, "listen tcp "+ln.Addr().String()+": bind: address already in use")
}

// checkRunFails checks that the helper's Run returned an error containing
// each of want, that the parent exited non-zero, and that no process of
// the cluster is left. It returns Run's error.
func checkRunFails(t *testing.T, c *testCluster, want ...string) string {
	t.Helper()
	run := c.awaitKind(10*time.Second, kindRun)
	for _, w := range want {
		if !strings.Contains(run.Err, w) {
			t.Errorf("Run returned %q, want it to say %q", run.Err, w)
		}
	}
	if code := c.wait(5 * time.Second); code == 0 {
		t.Error("parent exited 0")
	}
	c.waitGone(5 * time.Second)
	return run.Err
}

// Workers that fail before serving: Run returns the worker's own cause
// within a few seconds and leaves no process behind.
func TestWorkerFailsAtStart(t *testing.T) {
	t.Parallel()
	c := startCluster(t, "-workers", "2", "-fail-from-gen", "1")
	checkRunFails(t, c, "prefork: worker ", "cannot open /nonexistent/config.toml")
}

// A worker that panics before it serves: Run's error carries the first
// line of the panic, which the worker's crash pipe brought the parent.
//
// 8b2b930 said only "exited before it was ready: exit status 2": the
// panic went to stderr alone.
func TestWorkerPanicsAtStart(t *testing.T) {
	t.Parallel()
	c := startCluster(t, "-workers", "1", "-panic-start")
	err := checkRunFails(t, c, "panic: cannot load /nonexistent/config.toml")
	if !strings.Contains(err, "(pid ") {
		t.Errorf("Run returned %q, want the worker's pid: the process was started", err)
	}
}

// A worker started by hand, with the worker variables but no channel to a
// parent: Serve returns ErrNoParent (the helper exits exitNoParent when
// errors.Is says so), whose text says what happened in one sentence.
//
// 8b2b930 printed the sentence and called os.Exit(1) inside Serve.
func TestWorkerStartedByHand(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, parent string }{
		{"no parent recorded", ""},
		{"parent is alive but gave no channel", fmt.Sprint(os.Getpid())},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cmd := exec.Command(os.Args[0])
			cmd.Env = append(os.Environ(), useHelper("hello"), "FORKLINE_WORKER=1", "FORKLINE_GENERATION=1", "FORKLINE_PARENT="+tc.parent)
			out, err := cmd.CombinedOutput()
			if code := cmd.ProcessState.ExitCode(); code != exitNoParent {
				t.Errorf("worker started by hand exited %d (%v), want %d: Serve did not return ErrNoParent:\n%s", code, err, exitNoParent, out)
			}
			if !strings.Contains(string(out), "hello: "+prefork.ErrNoParent.Error()) {
				t.Errorf("unclear message:\n%s", out)
			}
		})
	}
}

// net/http's own log (here, a handler's panic it recovered) goes to
// Config.Logger as a record that names the worker, not raw to stderr.
//
// 8b2b930 left http.Server.ErrorLog nil: the line went to the log
// package's default logger.
func TestServerErrorLogGoesToLogger(t *testing.T) {
	t.Parallel()
	c := startCluster(t, "-workers", "1")
	addr, pids := c.ready()
	if _, err := fetch(addr, "/panic", requestTimeout); err == nil {
		t.Fatal("a panicking handler answered")
	}
	rec := c.awaitLog(10*time.Second, "net/http's panic line", func(r logRecord) bool {
		return strings.HasPrefix(r.str("msg"), "http: panic serving")
	})
	if rec.num("worker") != 1 || rec.num("pid") != pids[1] || rec.str("level") != "ERROR" {
		t.Errorf("record %v: want level ERROR from worker 1 (pid %d)", rec, pids[1])
	}
	for _, line := range c.logs.all() {
		if strings.Contains(line, "http: panic serving") && !strings.HasPrefix(line, "{") {
			t.Errorf("raw line on stderr: %s", line)
		}
	}
	c.stopAndCheck()
}

// What a worker's environment is: its own, and what a program it starts
// inherits, have none of the parent's variables (a service manager's
// notify socket, socket activation, watchdog), no FORKLINE_* identity, and
// not the GOMAXPROCS the parent set for the worker's runtime; other
// variables pass.
//
// 8b2b930 handed every worker the parent's whole environment plus its
// identity and GOMAXPROCS, and the worker kept them.
func TestWorkerEnvironment(t *testing.T) {
	t.Parallel()
	parentOnly := []string{"NOTIFY_SOCKET=/run/forkline-test/notify", "LISTEN_PID=1", "LISTEN_FDS=2",
		"LISTEN_FDNAMES=web:admin", "WATCHDOG_USEC=30000000", "WATCHDOG_PID=1", "FDSTORE=4"}
	c := startHelper(t, helperSpec{env: append(parentOnly, "HELLO_KEPT=yes"), unset: []string{"GOMAXPROCS"}}, "-workers", "1")
	addr, _ := c.ready()
	for _, path := range []string{"/environ", "/env"} {
		body, err := fetch(addr, path, requestTimeout)
		if err != nil {
			t.Fatal(err)
		}
		env := strings.Split(strings.TrimSpace(body), "\n")
		if !slices.Contains(env, "HELLO_KEPT=yes") {
			t.Errorf("%s: a plain variable did not pass: %q", path, env)
		}
		for _, kv := range env {
			name, _, _ := strings.Cut(kv, "=")
			switch {
			case name == "GOMAXPROCS",
				strings.HasPrefix(name, "FORKLINE_") && !strings.HasPrefix(name, "FORKLINE_TEST_"),
				slices.ContainsFunc(parentOnly, func(p string) bool { return strings.HasPrefix(p, name+"=") }):
				t.Errorf("%s: %s", path, kv)
			}
		}
	}
	c.stopAndCheck()
}

// As PID 1 (a container without an init), the parent reaps the orphans it
// inherits: a worker's handler starts five sh that each leave a sleep
// behind; once the sleeps have exited, none is left <defunct>.
//
// 8b2b930 waited for its workers only: the orphans stayed zombies.
func TestOrphansReapedAsPID1(t *testing.T) {
	t.Parallel()
	useHelper("hello")
	unshare, err := exec.LookPath("unshare")
	if err != nil || os.Geteuid() != 0 {
		t.Skip("needs root and unshare(1) for a PID namespace")
	}
	if out, err := exec.Command(unshare, "--pid", "--fork", "--mount-proc", "true").CombinedOutput(); err != nil {
		t.Skipf("cannot create a PID namespace: %v: %s", err, out)
	}
	c := startHelper(t, helperSpec{wrap: []string{unshare, "--pid", "--fork", "--mount-proc"}}, "-workers", "1")
	if start := c.awaitKind(10*time.Second, kindStart); start.PID != 1 {
		t.Fatalf("the helper's parent is pid %d in its namespace, want 1", start.PID)
	}
	addr, _ := c.ready()
	body, err := fetch(addr, "/orphans?n=5", requestTimeout)
	if err != nil {
		t.Fatal(err)
	}
	var orphans []int
	if err := json.Unmarshal([]byte(body), &orphans); err != nil || len(orphans) != 5 {
		t.Fatalf("orphans: %q (%v)", body, err)
	}
	// The kernel tells only the parent when a process is reaped: poll
	// what the namespace shows, with a watchdog.
	var left []procEntry
	watchdog := time.NewTimer(10 * time.Second)
	defer watchdog.Stop()
	poll := time.NewTicker(20 * time.Millisecond)
	defer poll.Stop()
	for {
		body, err := fetch(addr, "/procs", requestTimeout)
		if err != nil {
			t.Fatal(err)
		}
		var ps []procEntry
		if err := json.Unmarshal([]byte(body), &ps); err != nil {
			t.Fatalf("procs: %q (%v)", body, err)
		}
		left = slices.DeleteFunc(ps, func(p procEntry) bool { return !slices.Contains(orphans, p.PID) && p.State != "Z" })
		if len(left) == 0 {
			break
		}
		select {
		case <-poll.C:
		case <-watchdog.C:
			t.Fatalf("orphans %v: still there (or <defunct>) 10 s later: %+v", orphans, left)
		}
	}
}
