package prefork_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/forkline/forkline/prefork"
)

// These tests run the parent in the test process itself, so that they can
// use its API (Send, Request, Workers, OnEvent) directly; the workers are
// this test binary running the "messenger" helper. The parent asks a worker
// to act with a request whose payload is a command.
func init() { helpers["messenger"] = messengerMain }

// command is what the parent asks a messenger worker to do.
type command struct {
	Op   string `json:"op"`
	To   int    `json:"to"`
	N    int    `json:"n"`
	Data string `json:"data"`
}

// messengerMain is a worker (only ever started by an in-test parent) that
// serves HTTP, answers commands, and reports every message it receives to
// the parent as "recv <self> from <sender> <data>".
func messengerMain([]string) int {
	var c *prefork.Cluster
	block := make(chan struct{})
	cfg := prefork.Config{
		Addr:   "127.0.0.1:0",
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		OnMessage: func(m prefork.Message) {
			for _, f := range m.Files {
				f.Close()
			}
			if len(m.Data) >= bulkSize {
				bulk.count(m.Data)
				return
			}
			if d, ok := strings.CutPrefix(string(m.Data), "pause "); ok {
				pause, _ := time.ParseDuration(d)
				<-time.After(pause) // a slow reader: the channel is not read meanwhile
				return
			}
			if string(m.Data) == "block" {
				select { // stop reading the channel for 2 s
				case <-block:
				case <-time.After(2 * time.Second):
				}
				return
			}
			c.Send(prefork.Parent, fmt.Appendf(nil, "recv %d from %d %s", prefork.WorkerID(), m.From, m.Data))
		},
		OnRequest: func(m prefork.Message) ([]byte, error) {
			var cmd command
			if err := m.Decode(&cmd); err != nil {
				return m.Data, nil // not a command: echo
			}
			return runCommand(c, cmd)
		},
	}
	c = prefork.New(cfg)
	err := c.Run(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "Hello from worker=%d pid=%d gen=%d\n", prefork.WorkerID(), os.Getpid(), prefork.Generation())
	}))
	close(block)
	if err != nil {
		fmt.Fprintln(os.Stderr, "messenger:", err)
		return 1
	}
	return 0
}

// bulkSize is the size of a bulk message: one numbered in its first 8
// bytes, which the messenger counts rather than reports.
const bulkSize = 64 << 10

// bulkCounter counts the bulk messages a messenger received, and notes a
// gap or a message out of order. It is used by the reader goroutine only;
// the "bulkcount" command reads it.
type bulkCounter struct {
	next     atomic.Uint64
	disorder atomic.Bool
}

var bulk bulkCounter

func (b *bulkCounter) count(data []byte) {
	if binary.LittleEndian.Uint64(data) != b.next.Load() {
		b.disorder.Store(true)
	}
	b.next.Add(1)
}

func runCommand(c *prefork.Cluster, cmd command) ([]byte, error) {
	switch cmd.Op {
	case "bulk":
		// cmd.N numbered bulk messages to cmd.To, as fast as the queue
		// takes them: "sent <n> full <how often Send said ErrQueueFull>".
		buf := make([]byte, bulkSize)
		full := 0
		deadline := time.Now().Add(30 * time.Second)
		for i := 0; i < cmd.N; {
			binary.LittleEndian.PutUint64(buf, uint64(i))
			err := c.Send(cmd.To, buf)
			if errors.Is(err, prefork.ErrQueueFull) {
				full++
				if time.Now().After(deadline) {
					return nil, fmt.Errorf("bulk: queue still full after 30 s, %d sent", i)
				}
				runtime.Gosched() // back-pressure: let the writer drain the queue
				continue
			}
			if err != nil {
				return nil, err
			}
			i++
		}
		return fmt.Appendf(nil, "sent %d full %d", cmd.N, full), nil
	case "bulkcount":
		return fmt.Appendf(nil, "%d %v", bulk.next.Load(), !bulk.disorder.Load()), nil
	case "echo":
		return []byte(cmd.Data), nil
	case "send":
		return nil, c.Send(cmd.To, []byte(cmd.Data))
	case "seq":
		// n numbered messages, as fast as the queue takes them.
		var buf [8]byte
		for i := 0; i < cmd.N; {
			binary.LittleEndian.PutUint64(buf[:], uint64(i))
			err := c.Send(cmd.To, buf[:])
			if errors.Is(err, prefork.ErrQueueFull) {
				runtime.Gosched() // back-pressure: let the writer drain the queue
				continue
			}
			if err != nil {
				return nil, err
			}
			i++
		}
		return []byte("sent"), nil
	case "request":
		data := []byte(cmd.Data)
		if cmd.N > 0 {
			data = bytes.Repeat([]byte("x"), cmd.N)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return c.Request(ctx, cmd.To, data)
	case "big":
		return bytes.Repeat([]byte("x"), cmd.N), nil
	case "sendfile":
		// Send a pipe's write end; whoever gets it writes into it.
		r, w, err := os.Pipe()
		if err != nil {
			return nil, err
		}
		defer r.Close()
		err = c.Send(cmd.To, []byte("file"), w)
		w.Close()
		if err != nil {
			return nil, err
		}
		r.SetReadDeadline(time.Now().Add(5 * time.Second))
		got, err := io.ReadAll(r)
		return got, err
	case "sleep":
		d, _ := time.ParseDuration(cmd.Data)
		<-time.After(d) // the slow work a request timeout is tested against
		return []byte("slept"), nil
	case "garbage", "forge", "unknown":
		// Write to the channel socket behind forkline's back.
		fd := channelFD()
		if fd < 0 {
			return nil, errors.New("no channel socket found")
		}
		b := []byte("GARBAGE GARBAGE GARBAGE GARBAGE")
		switch cmd.Op {
		case "forge":
			// A well-formed frame of a type only the parent may send.
			b = make([]byte, 24)
			b[0], b[1], b[2] = 0xF1, 1, 4 // magic, version, TypeDrain
		case "unknown":
			// A control frame of a type a later version might define.
			b = make([]byte, 24)
			b[0], b[1], b[2] = 0xF1, 1, 40
		}
		_, err := unix.Write(fd, b)
		return []byte("written"), err
	}
	return nil, fmt.Errorf("unknown op %q", cmd.Op)
}

// channelFD finds this worker's channel: its one unix stream socket.
func channelFD() int {
	for fd := 3; fd < 256; fd++ {
		typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
		if err != nil || typ != unix.SOCK_STREAM {
			continue
		}
		if sa, err := unix.Getsockname(fd); err == nil {
			if _, ok := sa.(*unix.SockaddrUnix); ok {
				return fd
			}
		}
	}
	return -1
}

// inProcess is a cluster whose parent is the test process.
type inProcess struct {
	t      *testing.T
	c      *prefork.Cluster
	done   chan error
	events chan prefork.Event
	msgs   chan prefork.Message
	logs   lockedBuffer // the parent's log

	stopOnce sync.Once
}

// startInProcess runs a parent here with n messenger workers and waits
// until they are all listening. onMessage, if set, replaces the default
// (collecting messages on ip.msgs).
func startInProcess(t *testing.T, n int, onMessage func(prefork.Message)) *inProcess {
	t.Helper()
	t.Setenv(envHelper, "messenger")
	ip := &inProcess{
		t:      t,
		done:   make(chan error, 1),
		events: make(chan prefork.Event, 1024),
		msgs:   make(chan prefork.Message, 1<<16),
	}
	if onMessage == nil {
		onMessage = func(m prefork.Message) { ip.msgs <- m }
	}
	var logOut io.Writer = &ip.logs
	if testing.Verbose() {
		logOut = io.MultiWriter(&ip.logs, os.Stderr)
	}
	ip.c = prefork.New(prefork.Config{
		Addr:        "127.0.0.1:0",
		Workers:     n,
		StopTimeout: 5 * time.Second,
		Logger:      slog.New(slog.NewTextHandler(logOut, &slog.HandlerOptions{Level: slog.LevelDebug})),
		OnEvent: func(ev prefork.Event) {
			if ev.Type == prefork.EventFork || ev.Type == prefork.EventExit {
				ip.c.Workers() // an OnEvent may call the cluster: no deadlock
			}
			ip.events <- ev
		},
		OnMessage: onMessage,
		OnRequest: func(m prefork.Message) ([]byte, error) {
			return append([]byte("parent got "), m.Data...), nil
		},
	})
	go func() { ip.done <- ip.c.Serve(nil) }()
	t.Cleanup(ip.stop)
	listening := make(map[int]bool)
	for len(listening) < n {
		ev := ip.event(10*time.Second, "listening", func(ev prefork.Event) bool { return ev.Type == prefork.EventListening })
		listening[ev.Worker.ID] = true
	}
	return ip
}

func (ip *inProcess) stop() { ip.stopOnce.Do(ip.shutdown) }

func (ip *inProcess) shutdown() {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := ip.c.Shutdown(ctx); err != nil {
		ip.t.Errorf("shutdown: %v", err)
	}
	select {
	case err := <-ip.done:
		if !errors.Is(err, prefork.ErrServerClosed) {
			ip.t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	case <-ctx.Done():
		ip.t.Error("Serve did not return")
	}
}

// event returns the next event that match accepts.
func (ip *inProcess) event(timeout time.Duration, what string, match func(prefork.Event) bool) prefork.Event {
	ip.t.Helper()
	return next(ip.t, ip.events, timeout, what+" event", match)
}

// message returns the next message that match accepts.
func (ip *inProcess) message(timeout time.Duration, what string, match func(prefork.Message) bool) prefork.Message {
	ip.t.Helper()
	return next(ip.t, ip.msgs, timeout, what+" message", match)
}

// next returns the next value from ch that match accepts; the test fails
// if none comes within timeout.
func next[T any](t *testing.T, ch <-chan T, timeout time.Duration, what string, match func(T) bool) T {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case v := <-ch:
			if match(v) {
				return v
			}
		case <-deadline:
			t.Fatalf("no %s within %v", what, timeout)
		}
	}
}

// command asks worker id to run cmd and returns its answer.
func (ip *inProcess) command(id int, cmd command) ([]byte, error) {
	data, _ := json.Marshal(cmd)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return ip.c.Request(ctx, id, data)
}

// Every worker sends 20,000 numbered messages to the parent at once: each
// worker's messages arrive complete and in order.
func TestMessageOrdering(t *testing.T) {
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
	select {
	case <-done:
	case <-time.After(20 * time.Second):
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
	ip := startInProcess(t, 3, nil)
	report := func(m prefork.Message) string { return string(m.Data) }
	collect := func(k int) map[string]int {
		got := make(map[string]int)
		for range k {
			got[report(ip.message(10*time.Second, "report", func(prefork.Message) bool { return true }))]++
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
	select {
	case m := <-ip.msgs:
		t.Errorf("unexpected extra message %q", m.Data)
	default:
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
	if !ev.Asked || ev.Err != nil {
		t.Errorf("exit after Disconnect: asked %v, err %v", ev.Asked, ev.Err)
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

// A worker hands the parent a pipe's write end; what the parent writes
// into it comes out of the worker's read end.
func TestDescriptorPassing(t *testing.T) {
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
	if got, err := ip.command(1, command{Op: "echo", Data: "still here"}); err != nil || string(got) != "still here" {
		t.Errorf("after the failed replies: %q, %v", got, err)
	}
}

// A control frame of a type this parent does not know, as a worker built
// from a newer binary may send during a reload, is ignored: the worker is
// not replaced.
func TestUnknownControlFrameIgnored(t *testing.T) {
	ip := startInProcess(t, 1, nil)
	pid := pidOf(t, ip, 1)
	if _, err := ip.command(1, command{Op: "unknown"}); err != nil {
		t.Fatal(err)
	}
	// The channel is ordered: the echo's request is answered after the
	// parent has read the unknown frame.
	if got, err := ip.command(1, command{Op: "echo", Data: "still here"}); err != nil || string(got) != "still here" {
		t.Errorf("after the unknown frame: %q, %v", got, err)
	}
	if now := pidOf(t, ip, 1); now != pid {
		t.Errorf("worker 1 was replaced (pid %d, then %d)", pid, now)
	}
}

// A worker stopped by a SIGTERM that is not the parent's (an operator's
// kill, or systemd signalling the whole cgroup) drains, tells the parent,
// and is replaced; its exit is not reported as a crash.
func TestWorkerStoppedBySignal(t *testing.T) {
	ip := startInProcess(t, 1, nil)
	pid := pidOf(t, ip, 1)
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// It serves until its replacement does, then drains: the replacement
	// listens before the old worker's exit.
	ip.event(10*time.Second, "listening of the replacement", func(ev prefork.Event) bool {
		return ev.Type == prefork.EventListening && ev.Worker.ID == 1 && ev.Worker.PID != pid
	})
	ev := ip.event(10*time.Second, "exit of worker 1", func(ev prefork.Event) bool {
		return ev.Type == prefork.EventExit && ev.Worker.PID == pid
	})
	if ev.Asked || ev.ExitCode != 0 || ev.Err == nil || !strings.Contains(ev.Err.Error(), "stopped on SIGTERM") {
		t.Errorf("exit: asked %v, code %d, err %v; want a clean exit, not asked, stopped on SIGTERM", ev.Asked, ev.ExitCode, ev.Err)
	}
	if logs := ip.logs.String(); strings.Contains(logs, "worker died") || !strings.Contains(logs, "worker stopped on a signal") {
		t.Errorf("the parent's log does not tell a drain from a crash:\n%s", logs)
	}
}

// A worker floods another that reads slowly: the parent holds the sender
// back, so that its Send reports ErrQueueFull, and nothing its Send accepted
// is lost; every message arrives, in order.
func TestRelayBackPressure(t *testing.T) {
	ip := startInProcess(t, 2, nil)
	// Worker 2 stops reading for 500 ms, less than the parent's relay wait.
	if err := ip.c.Send(2, []byte("pause 500ms")); err != nil {
		t.Fatal(err)
	}
	// 16 MiB: more than the parent's queue to worker 2 and worker 1's queue
	// to the parent hold together (4 MiB each).
	const n = 256
	got, err := ip.command(1, command{Op: "bulk", To: 2, N: n})
	if err != nil {
		t.Fatal(err)
	}
	var sent, full int
	if _, err := fmt.Sscanf(string(got), "sent %d full %d", &sent, &full); err != nil || sent != n {
		t.Fatalf("worker 1's flood: %q (%v)", got, err)
	}
	if full == 0 {
		t.Errorf("worker 1 sent %d messages of %d KiB to a worker that was not reading and never saw ErrQueueFull", n, bulkSize>>10)
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
	if strings.Contains(ip.logs.String(), "dropped") {
		t.Errorf("the parent dropped relayed messages:\n%s", ip.logs.String())
	}
	t.Logf("worker 1 saw ErrQueueFull %d times", full)
}

// A recipient that reads nothing for longer than the relay wait has what is
// relayed to it dropped (and logged) rather than stall its sender for good:
// the sender's flood ends, and both workers carry on.
func TestRelayToStuckWorker(t *testing.T) {
	ip := startInProcess(t, 2, nil)
	if err := ip.c.Send(2, []byte("pause 2500ms")); err != nil {
		t.Fatal(err)
	}
	const n = 256
	if got, err := ip.command(1, command{Op: "bulk", To: 2, N: n}); err != nil {
		t.Fatalf("worker 1's flood to a stuck worker: %q, %v", got, err)
	}
	// Worker 2 answers once it reads again; until then its queue is full.
	var count []byte
	deadline := time.Now().Add(20 * time.Second)
	for {
		var err error
		if count, err = ip.command(2, command{Op: "bulkcount"}); err == nil {
			break
		}
		if !errors.Is(err, prefork.ErrQueueFull) || time.Now().After(deadline) {
			t.Fatalf("worker 2 after its pause: %v", err)
		}
		<-time.After(10 * time.Millisecond) // poll: the queue drains when worker 2 reads again
	}
	var got int
	if _, err := fmt.Sscanf(string(count), "%d", &got); err != nil || got >= n {
		t.Errorf("worker 2 received (count, in order) %q; want fewer than %d", count, n)
	}
	t.Logf("worker 2 received (count, in order) %s of %d", count, n)
	if !strings.Contains(ip.logs.String(), "relayed messages dropped") {
		t.Errorf("no drop was logged:\n%s", ip.logs.String())
	}
	if got, err := ip.command(1, command{Op: "echo", Data: "still here"}); err != nil || string(got) != "still here" {
		t.Errorf("worker 1 after the flood: %q, %v", got, err)
	}
	if got, err := ip.command(2, command{Op: "echo", Data: "still here"}); err != nil || string(got) != "still here" {
		t.Errorf("worker 2 after the flood: %q, %v", got, err)
	}
}

// A worker that writes garbage, or forges a control frame, on its channel
// is replaced; the parent and the other worker carry on.
func TestBadFrameReplacesWorker(t *testing.T) {
	for _, op := range []string{"garbage", "forge"} {
		t.Run(op, func(t *testing.T) {
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
			if got, err := ip.command(2, command{Op: "echo", Data: "still here"}); err != nil || string(got) != "still here" {
				t.Errorf("other worker: %q, %v", got, err)
			}
			if after := pidOf(t, ip, 2); after != before {
				t.Errorf("worker 2 changed pid %d -> %d", before, after)
			}
			if got, err := ip.command(1, command{Op: "echo", Data: "new"}); err != nil || string(got) != "new" {
				t.Errorf("replacement worker: %q, %v", got, err)
			}
		})
	}
}

func pidOf(t *testing.T, ip *inProcess, id int) int {
	t.Helper()
	for _, w := range ip.c.Workers() {
		if w.ID == id && w.State == prefork.StateListening {
			return w.PID
		}
	}
	t.Fatalf("no listening worker %d in %+v", id, ip.c.Workers())
	return 0
}

// A worker that stops reading its channel fills its queue: the parent's
// Send reports ErrQueueFull instead of blocking, and the other worker is
// not affected.
func TestQueueFull(t *testing.T) {
	ip := startInProcess(t, 2, nil)
	if err := ip.c.Send(1, []byte("block")); err != nil {
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
	if !errors.Is(err, prefork.ErrQueueFull) {
		t.Fatalf("after %d sends to a worker that does not read: %v, want ErrQueueFull", sent, err)
	}
	t.Logf("queue full after %d messages of 64 KiB", sent)
	if got, err := ip.command(2, command{Op: "echo", Data: "fine"}); err != nil || string(got) != "fine" {
		t.Errorf("other worker: %q, %v", got, err)
	}
	// A stop still drains the worker with the full queue: the drain request
	// is not bounded by the queue, and the worker exits on its own.
	ip.stop()
	for {
		ev := ip.event(time.Second, "exit of worker 1", func(ev prefork.Event) bool { return ev.Type == prefork.EventExit })
		if ev.Worker.ID == 1 {
			if !ev.Asked || ev.Signal != nil || ev.ExitCode != 0 {
				t.Errorf("worker 1 with a full queue did not drain: asked %v, signal %v, code %d", ev.Asked, ev.Signal, ev.ExitCode)
			}
			break
		}
	}
}

// The events of a worker's life, in Node's order, with exitedAfterDisconnect
// (Asked) false for a kill and the replacement on the same id.
func TestEvents(t *testing.T) {
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
