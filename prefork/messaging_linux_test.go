package prefork_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/forkline/forkline/prefork"
)

// Messaging between the parent and its workers, on in-process clusters
// (inprocess_linux_test.go).

// Every worker sends 20,000 numbered messages to the parent at once: each
// worker's messages arrive complete and in order.
func TestMessageOrdering(t *testing.T) {
	t.Parallel()
	const n = 20000
	var mu sync.Mutex
	next := make(map[int]uint64)
	var bad []string
	done := make(chan struct{})
	ip := startInProcess(t, 2, func(m prefork.Message) {
		if len(m.Data) != 8 {
			return
		}
		i := binary.LittleEndian.Uint64(m.Data)
		mu.Lock()
		defer mu.Unlock()
		if i != next[m.From] {
			bad = append(bad, fmt.Sprintf("worker %d: got %d, want %d", m.From, i, next[m.From]))
		}
		next[m.From] = i + 1
		if next[1] == n && next[2] == n {
			close(done)
		}
	})
	var wg sync.WaitGroup
	for id := 1; id <= 2; id++ {
		wg.Go(func() {
			if _, err := ip.command(id, command{Op: "seq", N: n, To: prefork.Parent}); err != nil {
				t.Errorf("worker %d: %v", id, err)
			}
		})
	}
	wg.Wait()
	watchdog := time.NewTimer(20 * time.Second)
	defer watchdog.Stop()
	select {
	case <-done:
	case <-watchdog.C:
		mu.Lock()
		t.Fatalf("messages missing: got %v of %d each", next, n)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(bad) > 0 {
		t.Errorf("%d messages out of order, first: %s", len(bad), bad[0])
	}
}

// Relay and broadcast: each live worker gets a broadcast exactly once, a
// worker's broadcast skips itself, and worker-to-worker messages and
// requests go through the parent.
func TestRelayAndBroadcast(t *testing.T) {
	t.Parallel()
	ip := startInProcess(t, 3, nil)
	collect := func(k int) map[string]int {
		got := make(map[string]int)
		for range k {
			got[string(ip.message(10*time.Second, "report", func(prefork.Message) bool { return true }).Data)]++
		}
		return got
	}

	if err := ip.c.Send(prefork.All, []byte("from-parent")); err != nil {
		t.Fatal(err)
	}
	want := map[string]int{"recv 1 from 0 from-parent": 1, "recv 2 from 0 from-parent": 1, "recv 3 from 0 from-parent": 1}
	if got := collect(3); !equalCounts(got, want) {
		t.Errorf("parent broadcast: got %v, want %v", got, want)
	}

	if _, err := ip.command(1, command{Op: "send", To: prefork.All, Data: "from-1"}); err != nil {
		t.Fatal(err)
	}
	want = map[string]int{"recv 2 from 1 from-1": 1, "recv 3 from 1 from-1": 1}
	if got := collect(2); !equalCounts(got, want) {
		t.Errorf("worker broadcast: got %v, want %v", got, want)
	}

	if _, err := ip.command(1, command{Op: "send", To: 3, Data: "direct"}); err != nil {
		t.Fatal(err)
	}
	if got := collect(1); !equalCounts(got, map[string]int{"recv 3 from 1 direct": 1}) {
		t.Errorf("relay: got %v", got)
	}

	// Worker 1 asks worker 2, which echoes; worker 1 asks the parent.
	if got, err := ip.command(1, command{Op: "request", To: 2, Data: "ping"}); err != nil || string(got) != "ping" {
		t.Errorf("worker-to-worker request: %q, %v", got, err)
	}
	if got, err := ip.command(1, command{Op: "request", To: prefork.Parent, Data: "hi"}); err != nil || string(got) != "parent got hi" {
		t.Errorf("worker-to-parent request: %q, %v", got, err)
	}
	if extra, _, _ := ip.msgs.since(ip.mr.next); len(extra) > 0 {
		t.Errorf("unexpected extra message %q", extra[0].Data)
	}
}

func equalCounts(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// A message to a worker that is not alive is an error, from the parent and
// from a worker; so is a request to it.
func TestMessageToDeadWorker(t *testing.T) {
	t.Parallel()
	ip := startInProcess(t, 2, nil)
	if err := ip.c.Send(7, []byte("x")); !errors.Is(err, prefork.ErrNoWorker) {
		t.Errorf("Send to unknown worker: %v, want ErrNoWorker", err)
	}
	if _, err := ip.command(1, command{Op: "send", To: 7, Data: "x"}); err == nil || !strings.Contains(err.Error(), "no such worker") {
		t.Errorf("worker's Send to unknown worker: %v", err)
	}
	if err := ip.c.Disconnect(2); err != nil {
		t.Fatal(err)
	}
	ev := ip.event(10*time.Second, "exit of worker 2", func(ev prefork.Event) bool {
		return ev.Type == prefork.EventExit && ev.Worker.ID == 2
	})
	if !ev.Asked || ev.Err != nil || ev.Reason != "disconnect" {
		t.Errorf("exit after Disconnect: asked %v, reason %q, err %v", ev.Asked, ev.Reason, ev.Err)
	}
	if err := ip.c.Send(2, []byte("x")); !errors.Is(err, prefork.ErrNoWorker) {
		t.Errorf("Send to disconnected worker: %v, want ErrNoWorker", err)
	}
	if _, err := ip.command(1, command{Op: "request", To: 2, Data: "x"}); err == nil || !strings.Contains(err.Error(), "no such worker") {
		t.Errorf("worker's request to a disconnected worker: %v", err)
	}
	for _, w := range ip.c.Workers() {
		if w.ID == 2 {
			t.Errorf("slot 2 was refilled after Disconnect: %+v", w)
		}
	}
}

// A Request whose recipient dies before it answers returns at once, with
// an error that says so: from the parent to a worker, and from a worker to
// another through the parent's relay. The requester lives on.
//
// 8b2b930 left both waiting until their context ended.
func TestRequestToExitingWorker(t *testing.T) {
	t.Parallel()
	ip := startInProcess(t, 3, nil)
	die, _ := json.Marshal(command{Op: "die"})
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	start := time.Now()
	_, err := ip.c.Request(ctx, 2, die)
	t.Logf("the parent's request to a dying worker returned after %v: %v", time.Since(start).Round(time.Millisecond), err)
	if !errors.Is(err, prefork.ErrNoWorker) || !strings.Contains(err.Error(), "worker 2 exited before it answered") {
		t.Errorf("parent's request to a worker that died: %v, want ErrNoWorker saying worker 2 exited before it answered", err)
	}
	// Worker 1's request to worker 3 is relayed; worker 1 waits 5 s at most.
	start = time.Now()
	_, err = ip.command(1, command{Op: "request", To: 3, Data: string(die)})
	t.Logf("worker 1's request to a dying worker returned after %v: %v", time.Since(start).Round(time.Millisecond), err)
	if err == nil || !strings.Contains(err.Error(), "worker 3 exited before it answered") {
		t.Errorf("relayed request to a worker that died: %v, want an error saying worker 3 exited before it answered", err)
	}
	ip.echo(1)
}

// A worker hands the parent a pipe's write end; what the parent writes
// into it comes out of the worker's read end.
func TestDescriptorPassing(t *testing.T) {
	t.Parallel()
	ip := startInProcess(t, 1, func(m prefork.Message) {
		for _, f := range m.Files {
			f.WriteString("written by the parent")
			f.Close()
		}
	})
	got, err := ip.command(1, command{Op: "sendfile", To: prefork.Parent})
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "written by the parent" {
		t.Errorf("worker read %q through the passed descriptor", got)
	}
}

// A request whose answer is late returns ctx's error.
func TestRequestTimeout(t *testing.T) {
	t.Parallel()
	ip := startInProcess(t, 1, nil)
	data, _ := json.Marshal(command{Op: "sleep", Data: "1s"})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := ip.c.Request(ctx, 1, data); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("late request: %v, want context.DeadlineExceeded", err)
	}
}

// A reply larger than MaxMessageSize is not sent; the requester gets an
// error that says so at once rather than waiting for its deadline. Both
// ways: a worker's reply to the parent, and the parent's reply to a worker.
func TestReplyTooLarge(t *testing.T) {
	t.Parallel()
	ip := startInProcess(t, 1, nil)
	data, err := ip.command(1, command{Op: "big", N: 2 << 20})
	if err == nil || !strings.Contains(err.Error(), "too large") {
		t.Errorf("worker's 2 MiB reply: %d bytes, err %v; want an error naming the size", len(data), err)
	}
	// The parent answers "parent got " + the request: just over the limit.
	_, err = ip.command(1, command{Op: "request", To: prefork.Parent, N: prefork.DefaultMaxMessageSize})
	if err == nil || !strings.Contains(err.Error(), "too large") {
		t.Errorf("parent's reply over the limit: %v; want an error naming the size", err)
	}
	ip.echo(1)
}

// The channel's message limit is agreed when the worker says hello: the
// lower of the parent's and the worker's MaxMessageSize, both ways. A
// worker with a lower limit than the parent's gets nothing larger; a
// reload's new generation with a higher one (its config changed) sends
// nothing larger than the parent takes: Send says ErrTooLarge, and nobody
// is killed.
//
// 8b2b930 checked each Send against the sender's own limit only: the
// oversized frame broke the channel, and the parent killed the worker (or
// the worker took its parent for gone).
func TestMessageLimitAgreedAtHello(t *testing.T) {
	t.Parallel()
	ip := startInProcessWith(t, inProcessSpec{workers: 1, config: messengerConfig{MaxMessageSize: 512 << 10}})
	pid := pidOf(t, ip, 1)
	if err := ip.c.Send(1, make([]byte, 768<<10)); !errors.Is(err, prefork.ErrTooLarge) {
		t.Errorf("the parent's 768 KiB Send to a worker that takes 512 KiB: %v, want ErrTooLarge", err)
	}
	ip.echo(1)

	ip.setConfig(messengerConfig{MaxMessageSize: 4 << 20})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := ip.c.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	pid2 := pidOf(t, ip, 1)
	_, err := ip.command(1, command{Op: "send", To: prefork.Parent, N: 2 << 20})
	if err == nil || !strings.Contains(err.Error(), prefork.ErrTooLarge.Error()) {
		t.Errorf("the new worker's 2 MiB Send to a parent that takes 1 MiB: %v, want ErrTooLarge", err)
	}
	ip.echo(1)
	if now := pidOf(t, ip, 1); now != pid2 {
		t.Errorf("worker 1 of generation 2 was replaced (pid %d, then %d)", pid2, now)
	}
	for _, ev := range ip.events.all() {
		if ev.Type == prefork.EventExit && ev.Worker.PID != pid {
			t.Errorf("exit of a worker that was not reloaded away: %+v", ev)
		}
	}
}

// A control frame of a type this parent does not know, as a worker built
// from a newer binary may send during a reload, is ignored: the worker is
// not replaced.
func TestUnknownControlFrameIgnored(t *testing.T) {
	t.Parallel()
	ip := startInProcess(t, 1, nil)
	pid := pidOf(t, ip, 1)
	if _, err := ip.command(1, command{Op: "unknown"}); err != nil {
		t.Fatal(err)
	}
	// The channel is ordered: the echo's request is answered after the
	// parent has read the unknown frame.
	ip.echo(1)
	if now := pidOf(t, ip, 1); now != pid {
		t.Errorf("worker 1 was replaced (pid %d, then %d)", pid, now)
	}
}

// A worker stopped by a SIGTERM that is not the parent's (an operator's
// kill, or systemd signalling the whole cgroup) tells the parent, serves
// until its replacement does, drains and is replaced; its exit is not
// reported as a crash.
func TestWorkerStoppedBySignal(t *testing.T) {
	t.Parallel()
	ip := startInProcess(t, 1, nil)
	pid := pidOf(t, ip, 1)
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	ip.event(10*time.Second, "listening of the replacement", func(ev prefork.Event) bool {
		return ev.Type == prefork.EventListening && ev.Worker.ID == 1 && ev.Worker.PID != pid
	})
	ev := ip.event(10*time.Second, "exit of worker 1", func(ev prefork.Event) bool {
		return ev.Type == prefork.EventExit && ev.Worker.PID == pid
	})
	if ev.Asked || ev.ExitCode != 0 || ev.Err == nil || !strings.Contains(ev.Err.Error(), "stopped on SIGTERM") {
		t.Errorf("exit: asked %v, code %d, err %v; want a clean exit, not asked, stopped on SIGTERM", ev.Asked, ev.ExitCode, ev.Err)
	}
	byMsg := func(msg string) func(logRecord) bool {
		return func(r logRecord) bool { return strings.HasPrefix(r.str("msg"), msg) }
	}
	if len(ip.logged(byMsg("worker died"))) > 0 || len(ip.logged(byMsg("worker stopped on a signal"))) == 0 {
		t.Errorf("the parent's log does not tell a stop from a crash")
	}
}

// A slow OnMessage, in the parent or in a worker, does not hold up
// heartbeats: with HeartbeatTimeout 2 s, a parent's OnMessage that takes
// 3 s on worker 1's message, and worker 2's OnMessage that takes 3 s
// meanwhile, get no worker killed.
//
// 8b2b930 sent its pings and pongs on the channel, read by the goroutine
// that runs OnMessage, on both sides: both workers were judged hung.
func TestHeartbeatsDoNotWaitForCallbacks(t *testing.T) {
	t.Parallel()
	msgs := newFeed[prefork.Message]()
	ip := startInProcessWith(t, inProcessSpec{workers: 2, heartbeatTimeout: 2 * time.Second, onMessage: func(m prefork.Message) {
		if string(m.Data) == "slow" {
			slowWork(3 * time.Second) // a slow OnMessage in the parent
		}
		msgs.add(m)
	}})
	pids := map[int]int{1: pidOf(t, ip, 1), 2: pidOf(t, ip, 2)}
	if err := ip.c.Send(2, []byte("pause 3s")); err != nil {
		t.Fatal(err)
	}
	// Worker 1's answer comes after its message on the channel: the
	// command returns once the parent's OnMessage has.
	if _, err := ip.command(1, command{Op: "send", To: prefork.Parent, Data: "slow"}); err != nil {
		t.Fatal(err)
	}
	msgs.reader().await(t, 10*time.Second, "worker 2's report of its pause", func(m prefork.Message) bool {
		return m.From == 2 && string(m.Data) == "paused 3s"
	})
	// A verdict on either would have come during its stall, which is over.
	for id, pid := range pids {
		if now := pidOf(t, ip, id); now != pid {
			t.Errorf("worker %d was replaced (pid %d, then %d)", id, pid, now)
		}
		ip.echo(id)
	}
	for _, ev := range ip.events.all() {
		if ev.Type == prefork.EventExit {
			t.Errorf("a worker exited: %+v", ev)
		}
	}
	if recs := ip.logged(func(r logRecord) bool { return strings.HasPrefix(r.str("msg"), "worker missed its heartbeat") }); len(recs) > 0 {
		t.Errorf("heartbeat verdicts: %v", recs)
	}
}

// A panic in OnRequest or OnMessage is recovered, logged with who
// panicked, and, for a request, answered with an error; the process lives
// on. In a worker and in the parent.
//
// 8b2b930 recovered nothing: a worker's panic killed it (the parent's
// request then waited for its deadline), a parent's killed the parent.
func TestHandlerPanicsRecovered(t *testing.T) {
	t.Parallel()
	ip := startInProcessWith(t, inProcessSpec{workers: 1,
		onRequest: func(m prefork.Message) ([]byte, error) {
			panic("the parent's OnRequest panicked on purpose")
		},
		onMessage: func(m prefork.Message) {
			panic("the parent's OnMessage panicked on purpose")
		},
	})
	pid := pidOf(t, ip, 1)
	if _, err := ip.command(1, command{Op: "panic"}); err == nil || !strings.Contains(err.Error(), "OnRequest panicked: OnRequest panicked on purpose") {
		t.Errorf("request to a worker whose OnRequest panics: %v, want an error saying so", err)
	}
	if err := ip.c.Send(1, []byte("panic")); err != nil {
		t.Fatal(err)
	}
	if _, err := ip.command(1, command{Op: "request", To: prefork.Parent, Data: "x"}); err == nil || !strings.Contains(err.Error(), "OnRequest panicked") {
		t.Errorf("request to a parent whose OnRequest panics: %v, want an error saying so", err)
	}
	if _, err := ip.command(1, command{Op: "send", To: prefork.Parent, Data: "x"}); err != nil {
		t.Fatal(err)
	}
	// Each process handles its channel in order: once this answer is in,
	// both OnMessage calls have returned, and their panics are logged.
	ip.echo(1)
	if now := pidOf(t, ip, 1); now != pid {
		t.Errorf("worker 1 was replaced (pid %d, then %d)", pid, now)
	}
	panicked := func(where string) func(logRecord) bool {
		return func(r logRecord) bool { return r.str("msg") == where+" panicked; the process carries on" }
	}
	for _, where := range []string{"OnRequest", "OnMessage"} {
		if recs := ip.workerLogged(panicked(where)); len(recs) != 1 || recs[0].num("worker") != 1 || recs[0].num("pid") != pid {
			t.Errorf("worker's log of its %s panic: %v, want one record naming worker 1 (pid %d)", where, recs, pid)
		}
		if recs := ip.logged(panicked(where)); len(recs) != 1 {
			t.Errorf("parent's log of its %s panic: %v, want one record", where, recs)
		}
	}
	if recs := ip.logged(panicked("OnMessage")); len(recs) == 1 && recs[0].num("from") != 1 {
		t.Errorf("parent's log of its OnMessage panic %v does not name the sender, worker 1", recs[0])
	}
}

// A worker floods another that does not read for a while: the parent holds
// the sender back, so that its Send reports ErrQueueFull, and nothing its
// Send accepted is lost; every message arrives, in order. The same for a
// broadcast, whose ErrQueueFull names all workers as its recipient.
//
// 8b2b930 named a broadcast's full queue "worker -1".
func TestRelayBackPressure(t *testing.T) {
	t.Parallel()
	for _, to := range []int{2, prefork.All} {
		t.Run("to "+strconv.Itoa(to), func(t *testing.T) {
			t.Parallel()
			ip := startInProcess(t, 2, nil)
			// Worker 2 stops reading; worker 1 lets it read again at its
			// first ErrQueueFull, well within the parent's relay wait.
			if err := ip.c.Send(2, []byte("hold")); err != nil {
				t.Fatal(err)
			}
			// 16 MiB: more than the parent's queue to worker 2 and worker 1's
			// queue to the parent hold together (4 MiB each).
			const n = 256
			res := bulkTo(t, ip, command{Op: "bulk", To: to, N: n, Release: pidOf(t, ip, 2)})
			if res.Full == 0 {
				t.Errorf("worker 1 sent %d messages of %d KiB to a worker that was not reading and never saw ErrQueueFull", n, bulkSize>>10)
			}
			wantErr := "prefork: message queue full: worker 2"
			if to == prefork.All {
				wantErr = "prefork: message queue full: all workers"
			}
			if res.Full > 0 && res.Err != wantErr {
				t.Errorf("worker 1's Send said %q, want %q", res.Err, wantErr)
			}
			// The parent relayed the flood before it read worker 1's answer, and
			// its queue to worker 2 is in order: the count is final.
			count, err := ip.command(2, command{Op: "bulkcount"})
			if err != nil {
				t.Fatal(err)
			}
			if want := fmt.Sprintf("%d true", n); string(count) != want {
				t.Errorf("worker 2 received (count, in order) %q, want %q", count, want)
			}
			if recs := ip.logged(func(r logRecord) bool { return strings.Contains(r.str("msg"), "dropped") }); len(recs) > 0 {
				t.Errorf("the parent dropped relayed messages: %v", recs)
			}
			t.Logf("worker 1 saw ErrQueueFull %d times", res.Full)
		})
	}
}

// bulkTo has worker 1 run the bulk command cmd.
func bulkTo(t *testing.T, ip *inProcess, cmd command) bulkResult {
	t.Helper()
	got, err := ip.command(1, cmd)
	if err != nil {
		t.Fatalf("worker 1's flood: %v", err)
	}
	var res bulkResult
	if err := json.Unmarshal(got, &res); err != nil || res.Sent != cmd.N {
		t.Fatalf("worker 1's flood: %q (%v)", got, err)
	}
	return res
}

// A recipient that reads nothing for longer than the relay wait has what is
// relayed to it dropped (and logged) rather than stall its sender for good:
// the sender's flood ends, and both workers carry on.
func TestRelayToStuckWorker(t *testing.T) {
	t.Parallel()
	ip := startInProcess(t, 2, nil)
	if err := ip.c.Send(2, []byte("hold")); err != nil {
		t.Fatal(err)
	}
	const n = 256
	bulkTo(t, ip, command{Op: "bulk", To: 2, N: n})
	if err := syscall.Kill(pidOf(t, ip, 2), syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	ip.message(20*time.Second, "worker 2's report of its release", func(m prefork.Message) bool {
		return m.From == 2 && string(m.Data) == "released"
	})
	// Worker 2 reads again, but its queue may still be full: the parent's
	// queue gives no notice of room, so the count is asked for again.
	var count []byte
	watchdog := time.NewTimer(20 * time.Second)
	defer watchdog.Stop()
	retry := time.NewTicker(10 * time.Millisecond)
	defer retry.Stop()
	for {
		var err error
		if count, err = ip.command(2, command{Op: "bulkcount"}); err == nil {
			break
		}
		if !errors.Is(err, prefork.ErrQueueFull) {
			t.Fatalf("worker 2 after its release: %v", err)
		}
		select {
		case <-retry.C:
		case <-watchdog.C:
			t.Fatalf("worker 2's queue still full 20 s after its release: %v", err)
		}
	}
	var got int
	if _, err := fmt.Sscanf(string(count), "%d", &got); err != nil || got >= n {
		t.Errorf("worker 2 received (count, in order) %q; want fewer than %d", count, n)
	}
	t.Logf("worker 2 received (count, in order) %s of %d", count, n)
	if len(ip.logged(func(r logRecord) bool { return strings.HasPrefix(r.str("msg"), "relayed messages dropped") })) == 0 {
		t.Error("no drop was logged")
	}
	ip.echo(1)
	ip.echo(2)
}

// A worker that writes garbage, or forges a control frame, on its channel
// is replaced; the parent and the other worker carry on.
func TestBadFrameReplacesWorker(t *testing.T) {
	t.Parallel()
	for _, op := range []string{"garbage", "forge"} {
		t.Run(op, func(t *testing.T) {
			t.Parallel()
			ip := startInProcess(t, 2, nil)
			before := pidOf(t, ip, 2)
			data, _ := json.Marshal(command{Op: op})
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			ip.c.Request(ctx, 1, data) // the worker may die before it answers
			cancel()
			ev := ip.event(10*time.Second, "exit of worker 1", func(ev prefork.Event) bool {
				return ev.Type == prefork.EventExit && ev.Worker.ID == 1
			})
			if ev.Asked || ev.Err == nil || !strings.Contains(ev.Err.Error(), "malformed") {
				t.Errorf("exit of the bad worker: asked %v, err %v; want an error naming the malformed frame", ev.Asked, ev.Err)
			}
			ip.event(10*time.Second, "replacement listening", func(ev prefork.Event) bool {
				return ev.Type == prefork.EventListening && ev.Worker.ID == 1
			})
			ip.echo(2)
			if after := pidOf(t, ip, 2); after != before {
				t.Errorf("worker 2 changed pid %d -> %d", before, after)
			}
			ip.echo(1)
		})
	}
}

// A worker that stops reading its channel fills its queue: the parent's
// Send reports ErrQueueFull instead of blocking, naming the worker, to it
// and in a broadcast, and the other worker is not affected.
func TestQueueFull(t *testing.T) {
	t.Parallel()
	ip := startInProcess(t, 2, nil)
	if err := ip.c.Send(1, []byte("hold")); err != nil {
		t.Fatal(err)
	}
	payload := make([]byte, 64<<10)
	var err error
	sent := 0
	for ; sent < 4096; sent++ { // 256 MiB at most; the queue holds 4 MiB
		if err = ip.c.Send(1, payload); err != nil {
			break
		}
	}
	if !errors.Is(err, prefork.ErrQueueFull) || err.Error() != "prefork: message queue full: worker 1" {
		t.Fatalf("after %d sends to a worker that does not read: %v, want ErrQueueFull naming worker 1", sent, err)
	}
	t.Logf("queue full after %d messages of 64 KiB", sent)
	if err := ip.c.Send(prefork.All, payload); !errors.Is(err, prefork.ErrQueueFull) || !strings.Contains(err.Error(), "worker 1") {
		t.Errorf("broadcast with worker 1's queue full: %v, want ErrQueueFull naming worker 1", err)
	}
	ip.echo(2)
	// A stop still drains the worker with the full queue: the drain request
	// is not bounded by the queue, and the worker, let go once the stop has
	// begun, exits on its own.
	pid := pidOf(t, ip, 1)
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		ip.stop()
	}()
	ip.event(10*time.Second, "the cluster stopping", func(ev prefork.Event) bool { return ev.Type == prefork.EventStopping })
	if err := syscall.Kill(pid, syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	ev := ip.event(20*time.Second, "exit of worker 1", func(ev prefork.Event) bool {
		return ev.Type == prefork.EventExit && ev.Worker.ID == 1
	})
	if !ev.Asked || ev.Signal != nil || ev.ExitCode != 0 {
		t.Errorf("worker 1 with a full queue did not drain: asked %v, signal %v, code %d", ev.Asked, ev.Signal, ev.ExitCode)
	}
	<-stopped // the stop is bounded by its own deadline
}

// The events of a worker's life, in Node's order, with exitedAfterDisconnect
// (Asked) false for a kill and the replacement on the same id.
func TestEvents(t *testing.T) {
	t.Parallel()
	ip := startInProcess(t, 1, nil)
	pid := pidOf(t, ip, 1)
	if err := ip.c.Kill(1, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var seq []string
	var exit prefork.Event
	for len(seq) < 5 {
		ev := ip.event(10*time.Second, "lifecycle", func(ev prefork.Event) bool { return ev.Worker.ID == 1 })
		seq = append(seq, ev.Type.String()+"/"+strconv.FormatBool(ev.Worker.PID == pid))
		if ev.Type == prefork.EventExit {
			exit = ev
		}
	}
	want := "disconnect/true exit/true fork/false online/false listening/false"
	if got := strings.Join(seq, " "); got != want {
		t.Errorf("events: %s, want %s", got, want)
	}
	if exit.Asked || exit.Signal != syscall.SIGKILL || exit.ExitCode != -1 {
		t.Errorf("exit event: asked %v signal %v code %d", exit.Asked, exit.Signal, exit.ExitCode)
	}
	ws := ip.c.Workers()
	if len(ws) != 1 || ws[0].ID != 1 || ws[0].PID == pid || ws[0].Restarts != 1 {
		t.Errorf("workers after the kill: %+v", ws)
	}
}
