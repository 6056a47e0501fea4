package prefork_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Two workers, 2,000 requests on fresh connections: the kernel spreads
// them, each worker serves at least 35%.
func TestSpreadAcrossWorkers(t *testing.T) {
	c := startCluster(t, "-workers", "2")
	addr, _ := c.ready()
	counts := make(map[int]int)
	const n = 2000
	for range n {
		h, err := get(addr, "/", 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		counts[h.worker]++
	}
	t.Logf("requests per worker: %v", counts)
	for id := 1; id <= 2; id++ {
		if counts[id] < n*35/100 {
			t.Errorf("worker %d served %d of %d requests, want at least 35%%", id, counts[id], n)
		}
	}
	c.stopAndCheck()
}

// loadClients runs n clients requesting on fresh connections until stop is
// closed, and counts what they get.
type loadClients struct {
	ok, failed atomic.Int64
	mu         sync.Mutex
	errs       []error
	wg         sync.WaitGroup
	stop       chan struct{}
	reached    map[int64]chan struct{} // closed when ok reaches the key
}

func startLoad(addr string, n int, marks ...int64) *loadClients {
	l := &loadClients{stop: make(chan struct{}), reached: make(map[int64]chan struct{})}
	for _, m := range marks {
		l.reached[m] = make(chan struct{})
	}
	for range n {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				if _, err := get(addr, "/", 20*time.Second); err != nil {
					l.failed.Add(1)
					l.mu.Lock()
					l.errs = append(l.errs, err)
					l.mu.Unlock()
					continue
				}
				if ch, ok := l.reached[l.ok.Add(1)]; ok {
					close(ch)
				}
			}
		}()
	}
	return l
}

// await waits until the clients have had mark successful requests.
func (l *loadClients) await(t *testing.T, mark int64, timeout time.Duration) {
	t.Helper()
	select {
	case <-l.reached[mark]:
	case <-time.After(timeout):
		t.Fatalf("clients did not reach %d successful requests within %v (ok %d, failed %d)", mark, timeout, l.ok.Load(), l.failed.Load())
	}
}

func (l *loadClients) finish() (ok, failed int64, errs []error) {
	close(l.stop)
	l.wg.Wait()
	return l.ok.Load(), l.failed.Load(), l.errs
}

// SIGKILL a worker while 32 clients keep requesting, with connections
// waiting in its slot's accept queue: the replacement takes the same slot
// and socket, and no queued connection fails. Only the requests the dead
// worker had already accepted may fail.
func TestKilledWorkerLosesNoQueuedConnection(t *testing.T) {
	c := startCluster(t, "-workers", "2")
	addr, pids := c.ready()
	port := portOf(t, addr)
	victim := pids[1]

	const clients, wantQueued = 32, 16
	load := startLoad(addr, clients, 200, 5000)
	load.await(t, 200, 20*time.Second)

	// Freeze worker 1, so that the connections the kernel gives to its
	// slot queue up, and wait until the kernel reports a queue (or until
	// every client is stuck on slot 1, queued or accepted before the stop).
	if err := syscall.Kill(victim, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(10 * time.Second)
	poll := time.NewTicker(time.Millisecond) // the kernel's counters have no notification
	defer poll.Stop()
	queued, held := 0, 0
	for queued < wantQueued && queued+held < clients {
		select {
		case <-poll.C:
		case <-deadline:
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
	rec := c.waitFor(10*time.Second, "replacement of worker 1", func(r logRecord) bool {
		return r.Msg == "listening" && r.Worker == 1 && r.PID != victim
	})
	load.await(t, 5000, 60*time.Second)
	ok, failed, errs := load.finish()
	t.Logf("queued at kill: %d, accepted by the killed worker: %d; requests ok %d, failed %d; replacement pid %d",
		queued, held, ok, failed, rec.PID)
	if failed > int64(held) {
		t.Errorf("%d requests failed, but the killed worker had accepted only %d connections: queued connections were lost: %v", failed, held, errs)
	}
	c.stopAndCheck()
}

// SIGTERM with slow requests in flight: every one completes, the parent
// exits 0 and no process is left.
func TestGracefulStopFinishesRequests(t *testing.T) {
	c := startCluster(t, "-workers", "2")
	addr, _ := c.ready()

	const n = 8
	inflight := make(chan struct{}, n)
	results := make(chan error, n)
	for range n {
		go func() { results <- slowRequest(addr, "1s", inflight) }()
	}
	for range n {
		select {
		case <-inflight:
		case err := <-results:
			t.Fatalf("slow request ended before the stop: %v", err)
		case <-time.After(10 * time.Second):
			t.Fatal("slow requests did not start")
		}
	}
	c.signal(syscall.SIGTERM)
	for range n {
		if err := <-results; err != nil {
			t.Errorf("slow request failed during graceful stop: %v", err)
		}
	}
	if code := c.wait(15 * time.Second); code != 0 {
		t.Errorf("parent exit code %d, want 0", code)
	}
	<-c.stderr
	if !c.groupGone() {
		t.Error("processes left after the parent exited")
	}
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

// SIGKILL the parent: every worker is gone within a second.
func TestWorkersDieWithParent(t *testing.T) {
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

// Inherit mode, forced where reuseport works: serves, and survives a worker
// kill.
func TestInheritMode(t *testing.T) {
	c := startCluster(t, "-workers", "2", "-mode", "inherit")
	c.waitFor(10*time.Second, "listening record of the parent", func(r logRecord) bool {
		return r.Msg == "listening" && r.Worker == 0 && r.Mode == "inherit"
	})
	addr, pids := c.ready()
	for range 50 {
		if _, err := get(addr, "/", 5*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if err := syscall.Kill(pids[2], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	c.waitFor(10*time.Second, "replacement of worker 2", func(r logRecord) bool {
		return r.Msg == "listening" && r.Worker == 2 && r.PID != pids[2]
	})
	seen := make(map[int]bool)
	for range 200 {
		h, err := get(addr, "/", 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		seen[h.worker] = true
	}
	if !seen[1] && !seen[2] {
		t.Errorf("no worker answered: %v", seen)
	}
	c.stopAndCheck()
}

// A port held by a plain listener: Run fails within 5 s with an error that
// names the address and the cause, and leaves no process behind.
// An address that cannot be bound: Run returns at once an error that names
// the cause, before any worker starts; no process is left.
func TestBadAddress(t *testing.T) {
	for _, tc := range []struct{ addr, want string }{
		{"127.0.0.1", "missing port in address"},
		{"127.0.0.1:99999", "invalid port"},
		{"127.0.0.1:no-such-service", "unknown port"},
		{"192.0.2.1:8080", "listen tcp 192.0.2.1:8080: bind: cannot assign requested address"}, // TEST-NET-1
	} {
		t.Run(tc.addr, func(t *testing.T) {
			c := startCluster(t, "-workers", "2", "-addr", tc.addr)
			if code := c.wait(5 * time.Second); code == 0 {
				t.Fatal("parent exited 0")
			}
			<-c.stderr
			if out := c.output(); !strings.Contains(out, tc.want) {
				t.Errorf("output does not say %q:\n%s", tc.want, out)
			}
			if !c.groupGone() {
				t.Error("processes left behind")
			}
		})
	}
}

func TestPortInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c := startCluster(t, "-workers", "2", "-addr", ln.Addr().String())
	if code := c.wait(5 * time.Second); code == 0 {
		t.Fatal("parent exited 0 with the port in use")
	}
	<-c.stderr
	out := c.output()
	want := "listen tcp " + ln.Addr().String() + ": bind: address already in use"
	if !strings.Contains(out, want) {
		t.Errorf("output does not say %q:\n%s", want, out)
	}
	if !c.groupGone() {
		t.Error("processes left behind")
	}
}

// Workers that fail before serving: Run returns the worker's own cause
// within a few seconds and leaves no process behind.
func TestWorkerFailsAtStart(t *testing.T) {
	c := startCluster(t, "-workers", "2", "-fail-start")
	if code := c.wait(5 * time.Second); code == 0 {
		t.Fatal("parent exited 0 although no worker could start")
	}
	<-c.stderr
	out := c.output()
	if !strings.Contains(out, "hello: prefork: worker ") || !strings.Contains(out, "cannot open /nonexistent/config.toml") {
		t.Errorf("Run's error does not carry the worker's cause:\n%s", out)
	}
	if !c.groupGone() {
		t.Error("processes left behind")
	}
}

// A worker started by hand, with the worker variables but no channel to a
// parent, says so in one sentence and exits non-zero.
func TestWorkerStartedByHand(t *testing.T) {
	for _, tc := range []struct{ name, parent string }{
		{"no parent recorded", ""},
		{"parent is alive but gave no channel", fmt.Sprint(os.Getpid())},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(os.Args[0])
			cmd.Env = append(os.Environ(), envHelper+"=hello", "FORKLINE_WORKER=1", "FORKLINE_GENERATION=1", "FORKLINE_PARENT="+tc.parent)
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("worker started by hand exited 0:\n%s", out)
			}
			if !strings.Contains(string(out), "started as a forkline worker but has no channel to a forkline parent") {
				t.Errorf("unclear message:\n%s", out)
			}
		})
	}
}
