package prefork_test

import (
	"fmt"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/forkline/forkline/prefork"
)

// SIGTTIN adds a worker with the next id and its own socket; SIGTTOU
// removes it again; requests keep being answered throughout. The parent
// logs each signal by its name.
//
// 8b2b930 logged SIGTTIN as "stopped (tty input)" (syscall's String).
func TestScaleWithSignals(t *testing.T) {
	t.Parallel()
	c := startCluster(t, "-workers", "2")
	addr, _ := c.ready()

	c.signal(syscall.SIGTTIN)
	w3 := c.awaitEvent(10*time.Second, "worker 3 listening", prefork.EventListening, func(o observation) bool { return o.Worker.ID == 3 })
	awaitSignalLog(t, c, "SIGTTIN", "scale-up")
	seen := make(map[int]int)
	for range 600 {
		seen[mustGet(t, addr).worker]++
	}
	t.Logf("requests per worker with 3 workers: %v", seen)
	if seen[3] == 0 {
		t.Errorf("the new worker served nothing: %v", seen)
	}

	c.signal(syscall.SIGTTOU)
	exit := c.awaitEvent(10*time.Second, "the exit of worker 3", prefork.EventExit, func(o observation) bool { return o.Worker.PID == w3.Worker.PID })
	if !exit.Asked || exit.Reason != "scale-down" || !exit.cleanExit() {
		t.Errorf("worker 3's exit %v: want asked, for scale-down, status 0", exit)
	}
	awaitSignalLog(t, c, "SIGTTOU", "scale-down")
	for range 300 {
		if mustGet(t, addr).worker == 3 {
			t.Fatalf("worker 3 answered after the scale-down")
		}
	}
	c.stopAndCheck()
}

// awaitSignalLog waits for the parent's log record of a signal: the one
// sign that the supervisor itself has taken it.
func awaitSignalLog(t *testing.T, c *testCluster, name, action string) {
	t.Helper()
	rec := c.awaitLog(10*time.Second, "the parent's record of "+name, func(r logRecord) bool {
		return r.str("msg") == "signal" && r.str("action") == action
	})
	if got := rec.str("signal"); got != name {
		t.Errorf("the parent logged the signal as %q, want %q", got, name)
	}
}

// SIGTTIN and SIGTTOU that arrive during a reload are applied once it has
// committed, to the new generation. The new generation is held (it waits
// for a SIGUSR1 before it serves) until the signal is in.
//
// 8b2b930 dropped them: "cannot scale during a reload".
func TestScaleDuringReload(t *testing.T) {
	t.Parallel()
	c := startCluster(t, "-workers", "2", "-hold-from-gen", "2")
	c.ready()

	c.signal(syscall.SIGHUP)
	c.awaitEvent(10*time.Second, "reload to generation 2", prefork.EventReloading, func(o observation) bool { return o.Gen == 2 })
	c.signal(syscall.SIGTTIN)
	awaitSignalLog(t, c, "SIGTTIN", "scale-up")
	releaseOnline(t, c, 2, 2)
	if o := c.awaitEvent(10*time.Second, "the end of the reload", prefork.EventReloaded, nil); o.Gen != 2 || o.Err != "" {
		t.Fatalf("reload: %v", o)
	}
	releaseOnline(t, c, 2, 1) // worker 3, of the new generation
	w3 := c.awaitEvent(10*time.Second, "worker 3 listening", prefork.EventListening, func(o observation) bool { return o.Worker.ID == 3 })
	if w3.Worker.Gen != 2 {
		t.Errorf("worker 3 is of generation %d, want 2", w3.Worker.Gen)
	}

	c.signal(syscall.SIGHUP)
	c.awaitEvent(10*time.Second, "reload to generation 3", prefork.EventReloading, func(o observation) bool { return o.Gen == 3 })
	c.signal(syscall.SIGTTOU)
	awaitSignalLog(t, c, "SIGTTOU", "scale-down")
	releaseOnline(t, c, 3, 3)
	// The reload drains generation 2, then the scale-down the new worker 3.
	var scaledDown []observation
	old := 0
	c.await(20*time.Second, "the exits of generation 2 and of the new worker 3", func(o observation) bool {
		switch {
		case !o.is(prefork.EventExit):
		case o.Worker.Gen == 2:
			old++
		case o.Worker.Gen == 3:
			scaledDown = append(scaledDown, o)
		}
		return old == 3 && len(scaledDown) > 0
	})
	if ex := scaledDown[0]; len(scaledDown) != 1 || ex.Worker.ID != 3 || !ex.Asked || ex.Reason != "scale-down" {
		t.Errorf("exits of generation 3: %v, want worker 3's alone, asked, for scale-down", scaledDown)
	}
	ws := c.report().Workers
	for _, w := range ws {
		if len(ws) != 2 || w.ID > 2 || w.Gen != 3 {
			t.Errorf("after the scale-down: %+v, want workers 1 and 2 of generation 3", ws)
			break
		}
	}
	c.stopAndCheck()
}

// releaseOnline waits for n workers of generation gen to come online, and
// lets each serve (the hello helper's -hold-from-gen).
func releaseOnline(t *testing.T, c *testCluster, gen, n int) {
	t.Helper()
	for range n {
		o := c.awaitEvent(10*time.Second, fmt.Sprintf("a worker of generation %d online", gen), prefork.EventOnline, func(o observation) bool {
			return o.Worker.Gen == gen
		})
		if err := syscall.Kill(o.Worker.PID, syscall.SIGUSR1); err != nil {
			t.Fatal(err)
		}
	}
}

// A worker that stops answering heartbeats (SIGSTOP) is killed and
// replaced on the same slot.
func TestHungWorkerReplaced(t *testing.T) {
	t.Parallel()
	c := startCluster(t, "-workers", "2", "-heartbeat-timeout", "500ms")
	addr, pids := c.ready()
	if err := syscall.Kill(pids[1], syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	exit := c.awaitEvent(10*time.Second, "the exit of the stopped worker", prefork.EventExit, func(o observation) bool { return o.Worker.PID == pids[1] })
	if exit.Asked || exit.Reason != "missed heartbeat" || exit.Signal != syscall.SIGKILL {
		t.Errorf("exit of the hung worker %v: want not asked, missed heartbeat, SIGKILL", exit)
	}
	repl := c.awaitEvent(10*time.Second, "the replacement of worker 1 listening", prefork.EventListening, func(o observation) bool { return o.Worker.ID == 1 })
	seen := make(map[int]bool)
	for range 200 {
		seen[mustGet(t, addr).pid] = true
	}
	if !seen[repl.Worker.PID] {
		t.Errorf("the replacement (pid %d) served nothing: %v", repl.Worker.PID, seen)
	}
}

// A parent that itself did not run for a while (SIGSTOP for 5 s, as a
// paused VM or a debugger would) does not take its workers' silence for a
// hang: no worker is replaced. Worker 1 stops answering 1.5 s before the
// parent stops and resumes just after it, so that pings to it are
// outstanding throughout: on the parent's clock it was silent for at most
// three of the four intervals of HeartbeatTimeout, on the wall clock for
// more than six seconds. The parent notices its gap and says so.
//
// 8b2b930 measured silence on the wall clock: every worker was 5 s late
// at the first heartbeat after SIGCONT, and was killed.
func TestPausedParentBlamesNoWorker(t *testing.T) {
	t.Parallel()
	c := startCluster(t, "-workers", "2", "-heartbeat-timeout", "4s", "-heartbeat-interval", "1s")
	addr, pids := c.ready()
	if err := syscall.Kill(pids[1], syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stimulus(1500 * time.Millisecond)
	c.signal(syscall.SIGSTOP)
	stimulus(5 * time.Second)
	c.signal(syscall.SIGCONT)
	if err := syscall.Kill(pids[1], syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	// The first heartbeat after the pause logs the gap: from then on the
	// parent has judged its workers.
	if _, err := c.lr.find(10*time.Second, func(line string) bool {
		return strings.Contains(line, "the parent did not run on time")
	}); err != nil {
		t.Fatalf("no log line about the parent's pause (%v); exits since: %v", err, exits(c))
	}
	rep := c.report() // through the supervisor's loop: after that heartbeat
	for id, pid := range pids {
		if !slices.ContainsFunc(rep.Workers, func(w workerObs) bool {
			return w.ID == id && w.PID == pid && w.State == prefork.StateListening.String()
		}) {
			t.Errorf("worker %d (pid %d) is not serving after the parent's pause: %+v", id, pid, rep.Workers)
		}
	}
	if ex := exits(c); len(ex) > 0 {
		t.Errorf("workers exited: %v", ex)
	}
	for range 20 {
		if a := mustGet(t, addr); pids[a.worker] != a.pid {
			t.Errorf("answer from worker %d pid %d, want the first workers %v", a.worker, a.pid, pids)
		}
	}
	c.stopAndCheck()
}

// stimulus lets d pass: how long a condition a test sets up lasts (a
// process stopped, a signal yet to come), never a wait for something.
func stimulus(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	<-t.C
}

// exits returns the exit events observed so far.
func exits(c *testCluster) []observation {
	return slices.DeleteFunc(c.obs.all(), func(o observation) bool { return !o.is(prefork.EventExit) })
}

// MaxRequests recycles each worker once it has served its budget: the
// replacement is ready before the old worker drains, and no request fails.
func TestMaxRequestsRecycles(t *testing.T) {
	t.Parallel()
	c := startCluster(t, "-workers", "2", "-max-requests", "100", "-max-requests-jitter", "20")
	addr, pids := c.ready()
	l := startLoad(addr, 8, false)
	defer l.finish()
	recycled := make(map[int]bool)
	c.await(30*time.Second, "the recycle of both first workers", func(o observation) bool {
		if o.is(prefork.EventExit) && pids[o.Worker.ID] == o.Worker.PID {
			if !o.Asked || o.Reason != "MaxRequests reached" || !o.cleanExit() {
				t.Errorf("exit of a first worker %v: want asked, MaxRequests reached, status 0", o)
			}
			recycled[o.Worker.ID] = true
		}
		return len(recycled) == 2
	})
	l.awaitOK(t, 600, 30*time.Second)
	l.finish()
	t.Log(l.summary())
	if _, failed := l.counts(); failed > 0 {
		t.Errorf("%d requests failed during recycling: %v", failed, l.errors())
	}
}

// MaxMemory below what a fresh worker uses: the slot does not recycle its
// worker every second, for ever; it backs off, and the log says why.
//
// 8b2b930 recycled the worker at every check, once a second.
func TestMaxMemoryBelowFreshWorker(t *testing.T) {
	t.Parallel()
	c := startCluster(t, "-workers", "1", "-max-memory", "1")
	c.ready()
	start := len(c.obs.all())
	stimulus(4 * time.Second) // the measurement: recycles are counted over it
	forks := 0
	for _, o := range c.obs.all()[start:] {
		if o.is(prefork.EventFork) {
			forks++
		}
	}
	// A first check that finds the worker no longer fresh (a slow start)
	// may recycle once; the replacement then backs off.
	if forks > 1 {
		t.Errorf("%d recycles in 4 s with MaxMemory below a fresh worker's RSS, want at most 1", forks)
	}
	rec := c.awaitLog(5*time.Second, "the MaxMemory warning", func(r logRecord) bool {
		return strings.HasPrefix(r.str("msg"), "MaxMemory is below what a fresh worker uses")
	})
	if rec.num("worker") != 1 || rec.num("max_memory") != 1 {
		t.Errorf("warning %v: want worker 1, max_memory 1", rec)
	}
	c.stopAndCheck()
}

// SIGTERM to every worker and to the parent, as systemd's
// KillMode=control-group sends it to the whole cgroup, under keep-alive
// load: no request is lost. A worker that someone else sends SIGTERM tells
// the parent and serves on until the parent drains it, with the rest. The
// parent gets its SIGTERM at once, or a moment after its workers (the
// lag); the clients reconnect when sent away, until a connection is
// refused: the cluster is gone.
//
// What counts is every connection made while the cluster served, that is
// before the parent began to stop: its "stopping" log record's time, taken
// on the supervisor's loop just before it closes its sockets. A connection
// made after that races the end of service: its handshake may be under way
// when the last socket stops listening, and the kernel resets it. Those are
// only counted.
//
// 8b2b930's workers drained on their own at once, while the parent still
// held their sockets: the connections made meanwhile queued where nobody
// would accept them, and were reset when the parent stopped: in three runs
// against it, these rounds lost 0, 4 and 22; 0, 9 and 14; 0, 0 and 10.
func TestStopOfWholeGroupLosesNothing(t *testing.T) {
	t.Parallel()
	for round, lag := range []time.Duration{0, 20 * time.Millisecond, 50 * time.Millisecond} {
		c := startCluster(t, "-workers", "2")
		addr, pids := c.ready()
		l := startLoadWith(&load{keepAlive: true, untilRefused: true}, addr, 32)
		l.awaitOK(t, 200, 20*time.Second)
		for _, pid := range mapValues(pids) {
			if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
		}
		stimulus(lag) // the parent's SIGTERM comes this much later
		c.signal(syscall.SIGTERM)
		if code := c.wait(20 * time.Second); code != 0 {
			t.Errorf("round %d: parent exit code %d, want 0", round, code)
		}
		l.wait() // every client ends at its next refused connection
		rec := c.awaitLog(5*time.Second, "the parent's stopping record", func(r logRecord) bool { return r.str("msg") == "stopping" })
		stopped, err := time.Parse(time.RFC3339Nano, rec.str("time"))
		if err != nil {
			t.Fatal(err)
		}
		var lost []string
		raced := 0
		for _, f := range l.failed() {
			if f.dialed.IsZero() || !f.dialed.Before(stopped) {
				raced++
			} else {
				lost = append(lost, f.desc)
			}
		}
		t.Logf("round %d, the parent %v after its workers: %s; it began to stop at %s; %d connections made since raced its end",
			round, lag, l.summary(), stopped.Format("15:04:05.000000"), raced)
		if len(lost) > 0 {
			t.Errorf("round %d: %d requests lost on connections made before the stop:\n%s", round, len(lost), strings.Join(lost, "\n"))
		}
	}
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
