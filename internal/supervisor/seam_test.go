//go:build unix

package supervisor

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"

	"github.com/forkline/forkline/internal/msg"
	"github.com/forkline/forkline/internal/wire"
	"github.com/forkline/forkline/signals"
)

// The supervisor's decisions, through the process seam (fake_test.go): no
// process is forked and no wall time is spent; each test is deterministic.

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var typeNames = map[EventType]string{EventFork: "fork", EventOnline: "online", EventListening: "listening",
	EventDisconnect: "disconnect", EventExit: "exit", EventReady: "ready", EventReloading: "reloading",
	EventReloaded: "reloaded", EventStopping: "stopping"}

// advance lets d of the bubble's time pass: inside testing/synctest,
// time.Sleep returns once every goroutine of the bubble waits and the fake
// clock has moved by d. It is how these tests say "2 s later"; what they
// wait for, they wait for with synctest.Wait or a channel.
func advance(d time.Duration) { time.Sleep(d) }

// drainEvents returns the events delivered so far.
func (h *harness) drainEvents() []Event {
	synctest.Wait()
	var evs []Event
	for len(h.events) > 0 {
		evs = append(evs, <-h.events)
	}
	return evs
}

// Start, serve, stop: a worker goes through its states in order and
// leaves when asked.
func TestStartAndStop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := start(t, Config{}, newFakeStarter())
		h.ready()
		h.stop(ErrClosed)
		var seq []string
		for _, ev := range h.drainEvents() {
			if ev.Worker.ID == 1 {
				seq = append(seq, typeNames[ev.Type]+"/"+ev.Worker.State.String())
			}
			if ev.Type == EventExit && (!ev.Asked || ev.Err != nil || ev.Reason != "stop") {
				t.Errorf("exit at stop: asked %v, err %v, reason %q", ev.Asked, ev.Err, ev.Reason)
			}
		}
		// Fork, online and listening came before ready, which h.ready read.
		if got, want := strings.Join(seq, " "), "disconnect/disconnected exit/dead"; got != want {
			t.Errorf("worker 1's events after ready: %s, want %s", got, want)
		}
	})
}

// A worker that fails before the cluster was ever ready fails the start:
// Run returns its cause, and every worker is stopped.
func TestStartFails(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newFakeStarter()
		st.behave = func(sp Spec) behaviour {
			if sp.ID == 2 {
				return behaviour{failStart: "cannot open config"}
			}
			return behaviour{}
		}
		h := start(t, Config{}, st)
		err := <-h.done
		var we *WorkerError
		if !errors.As(err, &we) || we.ID != 2 || !strings.Contains(err.Error(), "cannot open config") {
			t.Fatalf("Run returned %v, want worker 2's failure", err)
		}
	})
}

// The respawn backoff, on the bubble's clock: at once, then 100 ms,
// 150 ms, 225 ms ... between a crash and the next start; a worker that
// stayed ready for stableAfter resets the count.
func TestBackoffDelays(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := start(t, Config{Workers: 1}, newFakeStarter())
		h.ready()
		fw := h.worker()
		want := []time.Duration{0, 100 * time.Millisecond, 150 * time.Millisecond, 225 * time.Millisecond, 337500 * time.Microsecond}
		for i, d := range want {
			fw.crash <- 3
			h.event("exit", exitOf(fw.pid))
			crashed := time.Now()
			fw = h.worker()
			if got := time.Since(crashed); got != d {
				t.Errorf("crash %d: replaced after %v, want %v", i+1, got, d)
			}
		}
		advance(stableAfter)
		fw.crash <- 3
		h.event("exit", exitOf(fw.pid))
		crashed := time.Now()
		h.worker()
		if got := time.Since(crashed); got != 0 {
			t.Errorf("after a stable worker: replaced after %v, want at once", got)
		}
		h.stop(ErrClosed)
	})
}

func TestBackoffTable(t *testing.T) {
	for _, tc := range []struct {
		n    int
		want time.Duration
	}{
		{1, 0}, {2, 100 * time.Millisecond}, {3, 150 * time.Millisecond}, {4, 225 * time.Millisecond},
		{17, 30 * time.Second}, {1000, 30 * time.Second},
	} {
		if got := backoff(tc.n); got != tc.want {
			t.Errorf("backoff(%d) = %v, want %v", tc.n, got, tc.want)
		}
	}
}

// A reload whose new workers fail is aborted: Reload returns the cause,
// the old generation serves on, and every new worker is gone.
func TestReloadAbort(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newFakeStarter()
		st.behave = func(sp Spec) behaviour {
			switch {
			case sp.Gen == 2 && sp.ID == 1:
				return behaviour{failStart: "bad config in gen 2"}
			case sp.Gen == 2:
				return behaviour{readyAfter: time.Second}
			}
			return behaviour{}
		}
		h := start(t, Config{}, st)
		h.ready()
		err := h.s.Reload(context.Background())
		if err == nil || !strings.Contains(err.Error(), "bad config in gen 2") {
			t.Fatalf("Reload returned %v, want the gen 2 failure", err)
		}
		ev := h.event("reloaded", isType(EventReloaded))
		if ev.Gen != 2 || ev.Err == nil {
			t.Errorf("reloaded event: gen %d err %v", ev.Gen, ev.Err)
		}
		advance(2 * time.Second) // the slow gen 2 worker would be ready by now
		synctest.Wait()
		for _, in := range h.s.Workers() {
			if in.Gen != 1 || in.State != Listening {
				t.Errorf("after the failed reload: %+v, want gen 1 listening only", in)
			}
		}
		h.stop(ErrClosed)
	})
}

// Reloads asked for while one runs fold into one more: four requests, two
// reloads, every caller answered.
func TestReloadsCoalesce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newFakeStarter()
		st.behave = func(Spec) behaviour { return behaviour{readyAfter: 100 * time.Millisecond} }
		h := start(t, Config{}, st)
		h.ready()
		errs := make(chan error, 4)
		for range 4 {
			go func() { errs <- h.s.Reload(context.Background()) }()
		}
		for range 4 {
			if err := <-errs; err != nil {
				t.Errorf("Reload: %v", err)
			}
		}
		var gens []int
		for _, ev := range h.drainEvents() {
			if ev.Type == EventReloaded {
				gens = append(gens, ev.Gen)
			}
		}
		if len(gens) != 2 || gens[0] != 2 || gens[1] != 3 {
			t.Errorf("reloads: %v, want generations [2 3]", gens)
		}
		h.stop(ErrClosed)
	})
}

// slowAfter makes every generation-1 start after the first n slow to be
// ready (a recycle's successor).
func slowAfter(n int, d time.Duration) func(Spec) behaviour {
	started := 0
	return func(sp Spec) behaviour {
		started++
		if started > n && sp.Gen == 1 {
			return behaviour{readyAfter: d}
		}
		return behaviour{}
	}
}

// A recycle that a reload overtakes: its successor is drained, and the
// reload replaces every worker.
func TestRecycleOvertakenByReload(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newFakeStarter()
		st.behave = slowAfter(2, 10*time.Second)
		h := start(t, Config{}, st)
		h.ready()
		w1, _ := h.worker(), h.worker()
		w1.send(wire.Frame{Type: wire.TypeRecycle})
		succ := h.worker()
		if succ.spec.ID != 1 || succ.spec.Gen != 1 {
			t.Fatalf("recycle's successor: slot %d gen %d", succ.spec.ID, succ.spec.Gen)
		}
		if err := h.s.Reload(context.Background()); err != nil {
			t.Fatal(err)
		}
		ev := h.event("exit of the overtaken successor", exitOf(succ.pid))
		if !ev.Asked {
			t.Errorf("the overtaken successor's exit: %+v", ev)
		}
		synctest.Wait()
		for _, in := range h.s.Workers() {
			if in.Gen != 2 {
				t.Errorf("after the reload: %+v, want gen 2 only", in)
			}
		}
		h.stop(ErrClosed)
	})
}

// SetWorkers during a recycle, and SIGTTIN during a reload, wait for the
// handover and are applied after it, not dropped.
func TestScaleWaitsForHandover(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newFakeStarter()
		st.behave = slowAfter(2, time.Second)
		h := start(t, Config{}, st)
		h.ready()
		w1, _ := h.worker(), h.worker()
		w1.send(wire.Frame{Type: wire.TypeRecycle})
		h.worker() // the successor, ready in 1 s
		began := time.Now()
		if err := h.s.SetWorkers(3); err != nil {
			t.Fatal(err)
		}
		third := h.worker()
		if third.spec.ID != 3 || time.Since(began) != time.Second {
			t.Errorf("slot %d started %v after SetWorkers, want slot 3 once the recycle ended (1s)", third.spec.ID, time.Since(began))
		}
		reloaded := make(chan error, 1)
		go func() { reloaded <- h.s.Reload(context.Background()) }()
		h.event("reloading", isType(EventReloading))
		h.s.Signal(syscall.SIGTTIN, signals.ScaleUp)
		h.s.Signal(syscall.SIGTTIN, signals.ScaleUp)
		if err := <-reloaded; err != nil {
			t.Fatal(err)
		}
		ev := h.event("the fifth slot listening", func(ev Event) bool { return ev.Type == EventListening && ev.Worker.ID == 5 })
		if ev.Worker.Gen != 2 {
			t.Errorf("slot 5's worker is of gen %d, want the reloaded 2", ev.Worker.Gen)
		}
		h.stop(ErrClosed)
	})
}

// A worker that stops answering heartbeats is judged after exactly
// HeartbeatTimeout of the parent's running time, sent SIGTERM, SIGKILL a
// second later, and replaced; a healthy one never is.
func TestHeartbeatVerdict(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newFakeStarter()
		st.behave = func(sp Spec) behaviour { return behaviour{mute: sp.ID == 2 && sp.Gen == 1, noDrain: sp.ID == 2} }
		h := start(t, Config{HeartbeatTimeout: 2 * time.Second, HeartbeatInterval: 500 * time.Millisecond}, st)
		h.ready()
		began := time.Now()
		ev := h.event("exit of the silent worker", func(ev Event) bool { return ev.Type == EventExit && ev.Worker.ID == 2 })
		if ev.Err == nil || !strings.Contains(ev.Err.Error(), "no heartbeat") || ev.Signal != os.Kill {
			t.Errorf("exit: err %v signal %v; want no heartbeat, killed", ev.Err, ev.Signal)
		}
		// Pings go every 0.5 s; the first unanswered one (0.5 s) is 2 s old
		// at the tick of 2.5 s; then 1 s of grace before SIGKILL.
		if got := time.Since(began); got != 3500*time.Millisecond {
			t.Errorf("killed %v after ready, want 3.5s", got)
		}
		advance(time.Minute)
		for _, in := range h.s.Workers() {
			if in.ID == 1 && in.PID != 1001 {
				t.Errorf("the healthy worker was replaced: %+v", in)
			}
		}
		h.stop(ErrClosed)
	})
}

// A parent that did not run for 5 s (SIGSTOP, a paused VM) does not blame
// its workers: the time it lost counts against nobody, even when its
// heartbeat tick runs before it has read the answers that waited.
func TestPausedParentBlamesNobody(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newFakeStarter()
		h := start(t, Config{HeartbeatTimeout: 2 * time.Second, HeartbeatInterval: 500 * time.Millisecond}, st)
		h.ready()
		// Ticks at 0.5 s, 1 s ...: the parent stops reading answers at
		// 2.4 s, the tick of 2.5 s pings, and at 2.6 s its loop stops too:
		// that ping's answer waits unread, as in a stopped parent.
		advance(2400 * time.Millisecond)
		st.pause()
		advance(200 * time.Millisecond)
		hold := make(chan struct{})
		h.s.call(func() { <-hold })
		advance(5 * time.Second)
		close(hold)     // the loop runs first: its late tick finds that ping unanswered
		synctest.Wait() // that tick has run
		st.resume()     // then the answers are read
		advance(10 * time.Second)
		for _, ev := range h.drainEvents() {
			if ev.Type == EventExit {
				t.Errorf("a worker was replaced after the parent's pause: %+v", ev)
			}
		}
		if !strings.Contains(h.logs.String(), "the parent did not run on time") {
			t.Errorf("the pause was not logged:\n%s", h.logs)
		}
		h.stop(ErrClosed)
	})
}

// A Request to a worker that exits before it answers fails at once with
// an error that says so; it does not wait for its context.
func TestRequestToDyingWorker(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := start(t, Config{Workers: 1}, newFakeStarter())
		h.ready()
		fw := h.worker()
		errc := make(chan error, 1)
		go func() {
			_, err := h.s.Request(context.Background(), 1, []byte("hello?"))
			errc <- err
		}()
		synctest.Wait() // the request is sent; the fake worker does not answer
		fw.crash <- 2
		err := <-errc
		if !errors.Is(err, msg.ErrNoWorker) || !strings.Contains(err.Error(), "exited before it answered") {
			t.Errorf("Request returned %v, want ErrNoWorker: worker 1 exited before it answered", err)
		}
		h.stop(ErrClosed)
	})
}

// A worker sent SIGTERM by someone else says so; it serves until its
// successor does, then drains: a stop, not a crash, and no backoff.
func TestStoppedBySignal(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newFakeStarter()
		st.behave = slowAfter(1, time.Second)
		h := start(t, Config{Workers: 1}, st)
		h.ready()
		fw := h.worker()
		fw.send(wire.Frame{Type: wire.TypeStopping, Payload: []byte("SIGTERM")})
		succ := h.worker()
		began := time.Now()
		ev := h.event("exit of the stopped worker", exitOf(fw.pid))
		if got := time.Since(began); got != time.Second {
			t.Errorf("the stopped worker left %v after its successor started, want 1s (when it served)", got)
		}
		if ev.Asked || ev.Err == nil || !strings.Contains(ev.Err.Error(), "stopped on SIGTERM") {
			t.Errorf("exit: asked %v err %v; want not asked, stopped on SIGTERM", ev.Asked, ev.Err)
		}
		synctest.Wait()
		if ws := h.s.Workers(); len(ws) != 1 || ws[0].PID != succ.pid || ws[0].State != Listening {
			t.Errorf("workers after: %+v, want the successor serving", ws)
		}
		h.stop(ErrClosed)
	})
}

// MaxMemory below what a fresh worker uses: the slot backs off, doubling,
// instead of recycling every second, and the log says why.
func TestMemoryBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := Config{Workers: 1, MaxMemory: 1 << 20, MemoryOf: func(int) (int64, error) { return 64 << 20, nil }}
		h := start(t, cfg, newFakeStarter())
		h.ready()
		advance(time.Minute)
		recycles := h.logs.count("msg=recycled")
		// At 11 s (after 10 s), then 20 s after the successor was found
		// over the limit at once (32 s): two in a minute, not sixty.
		if recycles != 2 {
			t.Errorf("%d recycles in a minute, want 2", recycles)
		}
		if !strings.Contains(h.logs.String(), "MaxMemory is below what a fresh worker uses") {
			t.Errorf("no log line says why:\n%s", h.logs)
		}
		h.stop(ErrClosed)
	})
}

// Disconnect leaves its slot empty, with no respawn, until SetWorkers
// refills it.
func TestDisconnectThenRefill(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := start(t, Config{}, newFakeStarter())
		h.ready()
		_, w2 := h.worker(), h.worker()
		if err := h.s.Disconnect(2); err != nil {
			t.Fatal(err)
		}
		ev := h.event("exit of worker 2", exitOf(w2.pid))
		if !ev.Asked || ev.Reason != "disconnect" {
			t.Errorf("exit: %+v", ev)
		}
		advance(time.Minute)
		if ws := h.s.Workers(); len(ws) != 1 {
			t.Errorf("workers a minute after Disconnect: %+v", ws)
		}
		if err := h.s.SetWorkers(2); err != nil {
			t.Fatal(err)
		}
		if fw := h.worker(); fw.spec.ID != 2 {
			t.Errorf("SetWorkers refilled slot %d, want 2", fw.spec.ID)
		}
		h.stop(ErrClosed)
	})
}

// fakeManager records what the supervisor tells the service manager.
type fakeManager struct {
	mu   sync.Mutex
	msgs []string
}

func (m *fakeManager) Notify(lines ...string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.msgs = append(m.msgs, strings.Join(lines, " "))
	return nil
}

func (m *fakeManager) NotifyFDs(_ []int, lines ...string) error { return m.Notify(lines...) }

func (m *fakeManager) count(prefix string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, s := range m.msgs {
		if strings.HasPrefix(s, prefix) {
			n++
		}
	}
	return n
}

// The watchdog is pinged from the loop: while the loop is wedged (here, a
// call that does not return), the pings stop, and the manager's watchdog
// fires; they resume when it is free again.
func TestWatchdogPingsFromTheLoop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := &fakeManager{}
		h := start(t, Config{Manager: m, Watchdog: 100 * time.Millisecond}, newFakeStarter())
		h.ready()
		advance(time.Second)
		if n := m.count("WATCHDOG=1"); n < 9 {
			t.Fatalf("%d pings in a second, want 10", n)
		}
		wedged, release := make(chan struct{}), make(chan struct{})
		go h.s.call(func() { close(wedged); <-release })
		<-wedged
		before := m.count("WATCHDOG=1")
		advance(2 * time.Second)
		if n := m.count("WATCHDOG=1"); n != before {
			t.Errorf("%d pings while the loop was wedged", n-before)
		}
		close(release)
		advance(time.Second)
		if n := m.count("WATCHDOG=1"); n < before+5 {
			t.Errorf("%d pings in the second after the loop was freed", n-before)
		}
		h.stop(ErrClosed)
		if m.count("READY=1") != 1 || m.count("STOPPING=1") != 1 {
			t.Errorf("told the manager %q", m.msgs)
		}
	})
}
