// Command ipc measures forkline's messaging between a parent and its two
// workers, the way bench/ipc-node.js measures Node's cluster. bench/ipc.sh
// runs both.
//
// Measurements, in this order, all timed in the parent:
//
//   - round trip: the parent calls Request(ctx, 1, 64 bytes) in sequence and
//     worker 1's OnRequest echoes; the median of -rt round trips after
//     -warmup (p90, p99 on stderr);
//   - one-way: worker 1 sends -oneway 64-byte messages to the parent with
//     Send as fast as its queue takes them (on ErrQueueFull it yields, then
//     sleeps 20µs, and retries), then an end marker; the rate is the
//     messages the parent's OnMessage counted over the time from the parent
//     sending the command to the parent receiving the end marker;
//   - relay: the same from worker 1 to worker 2 (-relay messages), each
//     relayed by the parent; worker 2 counts them and, at the end marker,
//     tells the parent, which stops the clock. While its queue to worker 2
//     is full the parent holds worker 1 back, whose Send then reports
//     ErrQueueFull; the rate counts the messages delivered, and any that the
//     parent dropped (it does only when worker 2 reads nothing for a second)
//     are reported;
//   - windowed relay: the same, but worker 1 keeps at most -window messages
//     unacknowledged (worker 2 acknowledges every 4096), so the parent's
//     queue to worker 2 never fills: lossless, the way an application has
//     to relay a flood;
//   - parent send: the parent sends -send 64-byte messages to worker 1, then
//     an end marker; worker 1 counts and tells the parent.
//
// It also reports the parent's allocations per message (runtime.MemStats
// Mallocs, over the whole measurement, divided by the messages): over the
// one-way receive, and over the parent's send loop until worker 1 has
// everything.
//
// stdout gets one "key value" line per figure:
//
//	ipc-roundtrip-us <median>
//	ipc-oneway-msgs-per-s <rate>
//	ipc-relay-msgs-per-s <rate>
//	ipc-send-allocs-per-msg <x>
//	ipc-recv-allocs-per-msg <x>
//	ipc-relay-dropped <messages>
//	ipc-relay-windowed-msgs-per-s <rate>
//	ipc-send-msgs-per-s <rate>
//
// and stderr the details: percentiles; the CPU time (getrusage) of the
// parent and of worker 1 and the parent's allocations, per round trip;
// retries on ErrQueueFull; drops; allocations per Send in the worker.
//
// The same binary is the parent and, re-executed by forkline, each worker.
// Every loop is bounded in count and in time (-max per flood), the whole run
// by -timeout: past it the program says so, stops the workers and exits
// with status 2. Any other failure exits with status 1.
//
// Usage:
//
//	ipc [-rt 20000] [-warmup 2000] [-oneway 2000000] [-relay 1000000] [-window 16384] [-send 1000000] [-max 3s] [-timeout 2m]
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/forkline/forkline/prefork"
)

const (
	payloadSize = 64
	// ackEvery is how often a counting worker acknowledges a worker's
	// flood; a window must be at least that.
	ackEvery = 4096
)

// Control messages, told apart from the 64-byte payloads by their length.
const (
	endMark   = "!end"  // after the last payload of a flood
	gotPrefix = "!got " // a counting worker's report to the parent: "!got <count>"
	ackPrefix = "!ack " // a counting worker's acknowledgement to a flooding worker: "!ack <count>"
)

// command is what the parent asks a worker to do: a request whose payload
// starts with '{'. Any other request is echoed.
type command struct {
	Op     string        `json:"op"` // "flood", "take" or "cpu"
	To     int           `json:"to"`
	N      int           `json:"n"`
	Window int           `json:"window"` // flood: most messages unacknowledged; 0 = no window
	Max    time.Duration `json:"max"`    // flood: bound on the sending time
}

// floodResult is a worker's answer to a flood.
type floodResult struct {
	Sent         int     `json:"sent"`
	Retries      int     `json:"retries"`      // Sends that failed with ErrQueueFull
	Sleeps       int     `json:"sleeps"`       // of which were followed by a sleep, not a yield
	WindowWaits  int     `json:"window_waits"` // waits for an acknowledgement
	AllocsPerMsg float64 `json:"allocs_per_msg"`
	Seconds      float64 `json:"seconds"`
	TimedOut     bool    `json:"timed_out"`
}

func main() {
	var b bench
	flag.IntVar(&b.rt, "rt", 20000, "round trips measured")
	flag.IntVar(&b.warmup, "warmup", 2000, "round trips before measuring")
	flag.IntVar(&b.oneway, "oneway", 2000000, "messages worker 1 sends to the parent")
	flag.IntVar(&b.relay, "relay", 1000000, "messages worker 1 sends to worker 2 through the parent, in each relay measurement")
	flag.IntVar(&b.window, "window", 16384, "windowed relay: most messages unacknowledged (at least 4096)")
	flag.IntVar(&b.send, "send", 1000000, "messages the parent sends to worker 1")
	flag.DurationVar(&b.max, "max", 3*time.Second, "bound on the sending time of each flood")
	timeout := flag.Duration("timeout", 2*time.Minute, "bound on the whole run")
	flag.Parse()

	if prefork.IsWorker() {
		os.Exit(worker())
	}
	if b.window < ackEvery {
		fmt.Fprintf(os.Stderr, "ipc: -window must be at least %d: acknowledgements come every %d messages\n", ackEvery, ackEvery)
		os.Exit(1)
	}
	os.Exit(b.parent(*timeout))
}

// payload returns a 64-byte message body.
func payload(c byte) []byte { return bytes.Repeat([]byte{c}, payloadSize) }

// backoff waits a little after ErrQueueFull: a yield first, so that the
// Conn's writer goroutine runs, then short sleeps while the queue stays
// full (the reader on the other side is behind). prefork has no blocking
// Send, so this is what a sender has to do.
func backoff(spins int) (slept bool) {
	if spins < 4 {
		runtime.Gosched()
		return false
	}
	time.Sleep(20 * time.Microsecond)
	return true
}

// sendControl sends a small control message, retrying on ErrQueueFull for
// about a second at most.
func sendControl(c *prefork.Cluster, to int, data []byte) error {
	var err error
	for spins := 0; spins < 50000; spins++ {
		if err = c.Send(to, data); !errors.Is(err, prefork.ErrQueueFull) {
			return err
		}
		backoff(spins)
	}
	return err
}

// ---- worker ----

type workerState struct {
	c     *prefork.Cluster
	count atomic.Int64  // payloads received since the last end marker
	acked atomic.Int64  // payloads of this worker's flood its recipient has counted
	ackc  chan struct{} // cap 1: an acknowledgement arrived
}

func worker() int {
	w := &workerState{ackc: make(chan struct{}, 1)}
	w.c = prefork.New(prefork.Config{
		Addr:      "127.0.0.1:0",
		Logger:    slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		OnMessage: w.onMessage,
		OnRequest: w.onRequest,
	})
	// The server is a trivial HTTP one: it is not measured, but a worker
	// must serve to be ready.
	if err := w.c.Run(http.NotFoundHandler()); err != nil {
		fmt.Fprintln(os.Stderr, "ipc worker:", err)
		return 1
	}
	return 0
}

// onMessage runs on the goroutine that reads the parent's channel, which
// carries the relayed messages too: one at a time, in order.
func (w *workerState) onMessage(m prefork.Message) {
	switch {
	case len(m.Data) == payloadSize:
		n := w.count.Add(1)
		if m.From != prefork.Parent && n%ackEvery == 0 {
			if err := sendControl(w.c, m.From, fmt.Appendf(nil, "%s%d", ackPrefix, n)); err != nil {
				fmt.Fprintln(os.Stderr, "ipc worker: ack:", err)
			}
		}
	case string(m.Data) == endMark:
		if err := sendControl(w.c, prefork.Parent, fmt.Appendf(nil, "%s%d", gotPrefix, w.count.Swap(0))); err != nil {
			fmt.Fprintln(os.Stderr, "ipc worker: report:", err)
		}
	case bytes.HasPrefix(m.Data, []byte(ackPrefix)):
		n, _ := strconv.ParseInt(string(m.Data[len(ackPrefix):]), 10, 64)
		w.acked.Store(n)
		select {
		case w.ackc <- struct{}{}:
		default:
		}
	}
}

func (w *workerState) onRequest(m prefork.Message) ([]byte, error) {
	if len(m.Data) == 0 || m.Data[0] != '{' {
		return m.Data, nil // echo
	}
	var cmd command
	if err := m.Decode(&cmd); err != nil {
		return nil, err
	}
	switch cmd.Op {
	case "flood":
		return json.Marshal(w.flood(cmd))
	case "cpu":
		return strconv.AppendInt(nil, cpuTime().Microseconds(), 10), nil
	case "take":
		// The count so far, which restarts from 0, as at an end marker.
		return strconv.AppendInt(nil, w.count.Swap(0), 10), nil
	}
	return nil, fmt.Errorf("unknown op %q", cmd.Op)
}

// flood sends cmd.N 64-byte messages to cmd.To as fast as Send takes them
// (and, with a window, as the recipient acknowledges them), for at most
// cmd.Max, then the end marker.
func (w *workerState) flood(cmd command) floodResult {
	p := payload('m')
	var r floodResult
	w.acked.Store(0)
	timer := time.NewTimer(cmd.Max)
	defer timer.Stop()
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	start := time.Now()
	deadline := start.Add(cmd.Max)
	spins := 0
	for r.Sent < cmd.N && !r.TimedOut {
		if r.Sent&1023 == 0 && time.Now().After(deadline) {
			r.TimedOut = true
			break
		}
		if cmd.Window > 0 && int64(r.Sent)-w.acked.Load() >= int64(cmd.Window) {
			r.WindowWaits++
			select {
			case <-w.ackc:
			case <-timer.C:
				r.TimedOut = true
			}
			continue
		}
		err := w.c.Send(cmd.To, p)
		if err == nil {
			r.Sent++
			spins = 0
			continue
		}
		if !errors.Is(err, prefork.ErrQueueFull) {
			fmt.Fprintln(os.Stderr, "ipc worker: flood:", err)
			break
		}
		r.Retries++
		if backoff(spins) {
			r.Sleeps++
		}
		spins++
		if spins&63 == 0 && time.Now().After(deadline) {
			r.TimedOut = true
		}
	}
	r.Seconds = time.Since(start).Seconds()
	runtime.ReadMemStats(&ms1)
	if r.Sent > 0 {
		r.AllocsPerMsg = float64(ms1.Mallocs-ms0.Mallocs) / float64(r.Sent)
	}
	if err := sendControl(w.c, cmd.To, []byte(endMark)); err != nil {
		fmt.Fprintln(os.Stderr, "ipc worker: end marker:", err)
	}
	return r
}

// ---- parent ----

type bench struct {
	rt, warmup, oneway, relay, window, send int
	max                                     time.Duration

	c       *prefork.Cluster
	recv    atomic.Int64  // payloads the parent received
	marks   chan mark     // control messages the parent received
	ready   chan struct{} // closed when both workers are listening
	nready  atomic.Int32  // listening events
	exits   atomic.Int32  // exit events
	lastErr atomic.Value  // string: the last worker exit's error

	// The figures printed on stdout, in this order.
	rtUS, onewayRate, relayRate, sendAllocs, recvAllocs float64
	relayDropped                                        int64
	windowedRate, sendRate                              float64
}

// mark is a control message received by the parent, with its arrival time.
type mark struct {
	at   time.Time
	from int
	data string
}

func (b *bench) parent(timeout time.Duration) int {
	b.marks = make(chan mark, 16)
	b.ready = make(chan struct{})
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	b.c = prefork.New(prefork.Config{
		Addr:        "127.0.0.1:0",
		Workers:     2,
		StopTimeout: 5 * time.Second,
		Logger:      log,
		OnEvent: func(ev prefork.Event) {
			switch ev.Type {
			case prefork.EventListening:
				if b.nready.Add(1) == 2 {
					close(b.ready)
				}
			case prefork.EventExit:
				b.exits.Add(1)
				if ev.Err != nil {
					b.lastErr.Store(ev.Err.Error())
				}
			}
		},
		OnMessage: func(m prefork.Message) {
			if len(m.Data) == payloadSize {
				b.recv.Add(1)
				return
			}
			select {
			case b.marks <- mark{at: time.Now(), from: m.From, data: string(m.Data)}:
			default:
				fmt.Fprintf(os.Stderr, "ipc: control message %q from %d lost: nobody waits\n", m.Data, m.From)
			}
		},
	})

	served := make(chan error, 1)
	go func() { served <- b.c.Serve(nil) }()

	// The watchdog: past the bound, say so and stop the cluster, which
	// makes the measurement in progress fail at once; exit regardless
	// if even that does not end within 5 s.
	var timedOut atomic.Bool
	watchdog := time.AfterFunc(timeout, func() {
		timedOut.Store(true)
		fmt.Fprintf(os.Stderr, "ipc: timed out after %v: stopping the workers and exiting\n", timeout)
		time.AfterFunc(5*time.Second, func() {
			fmt.Fprintln(os.Stderr, "ipc: the cluster did not stop within 5s of Close; exiting anyway")
			os.Exit(2)
		})
		b.c.Close()
	})
	defer watchdog.Stop()

	err := b.measure(served)
	if err != nil && !timedOut.Load() {
		fmt.Fprintln(os.Stderr, "ipc:", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if serr := b.c.Shutdown(ctx); serr != nil {
		fmt.Fprintln(os.Stderr, "ipc: shutdown:", serr)
		return 1
	}
	serr := <-served
	switch {
	case timedOut.Load():
		return 2
	case !errors.Is(serr, prefork.ErrServerClosed):
		fmt.Fprintln(os.Stderr, "ipc: Serve returned", serr)
		return 1
	case err != nil:
		return 1
	}
	fmt.Printf("ipc-roundtrip-us %.1f\n", b.rtUS)
	fmt.Printf("ipc-oneway-msgs-per-s %.0f\n", b.onewayRate)
	fmt.Printf("ipc-relay-msgs-per-s %.0f\n", b.relayRate)
	fmt.Printf("ipc-send-allocs-per-msg %.2f\n", b.sendAllocs)
	fmt.Printf("ipc-recv-allocs-per-msg %.2f\n", b.recvAllocs)
	fmt.Printf("ipc-relay-dropped %d\n", b.relayDropped)
	fmt.Printf("ipc-relay-windowed-msgs-per-s %.0f\n", b.windowedRate)
	fmt.Printf("ipc-send-msgs-per-s %.0f\n", b.sendRate)
	return 0
}

func (b *bench) measure(served chan error) error {
	select {
	case <-b.ready:
	case err := <-served:
		served <- err // for parent, which waits for it
		return fmt.Errorf("cluster stopped before both workers were ready: %v", err)
	case <-time.After(30 * time.Second):
		return errors.New("workers not listening within 30s")
	}
	steps := []func() error{
		b.roundTrip,
		b.oneWay,
		func() error { return b.relayed(0) },
		func() error { return b.relayed(b.window) },
		b.parentSend,
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return err
		}
		if n := b.exits.Load(); n > 0 {
			return fmt.Errorf("%d worker(s) exited during the run (last error: %v)", n, b.lastErr.Load())
		}
	}
	return nil
}

func (b *bench) roundTrip() error {
	p := payload('r')
	samples := make([]time.Duration, 0, b.rt)
	// One context for the whole loop: a context.WithTimeout per request
	// would add a timer to every round trip.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var parentCPU0, workerCPU0 time.Duration
	var ms0, ms1 runtime.MemStats
	for i := 0; i < b.warmup+b.rt && ctx.Err() == nil; i++ {
		if i == b.warmup {
			var err error
			if workerCPU0, err = b.workerCPU(ctx, 1); err != nil {
				return fmt.Errorf("round trip: worker 1's CPU time: %w", err)
			}
			runtime.ReadMemStats(&ms0)
			parentCPU0 = cpuTime()
		}
		t := time.Now()
		got, err := b.c.Request(ctx, 1, p)
		d := time.Since(t)
		if errors.Is(err, context.DeadlineExceeded) {
			break
		}
		if err != nil {
			return fmt.Errorf("round trip %d: %w", i, err)
		}
		if !bytes.Equal(got, p) {
			return fmt.Errorf("round trip %d: echo of %d bytes is %d bytes", i, len(p), len(got))
		}
		if i >= b.warmup {
			samples = append(samples, d)
		}
	}
	parentCPU := cpuTime() - parentCPU0
	runtime.ReadMemStats(&ms1)
	workerCPU, err := b.workerCPU(context.Background(), 1)
	if err != nil {
		return fmt.Errorf("round trip: worker 1's CPU time: %w", err)
	}
	workerCPU -= workerCPU0
	if len(samples) == 0 {
		return errors.New("round trip: no sample within 30s")
	}
	slices.Sort(samples)
	q := func(f float64) float64 { return us(samples[min(len(samples)-1, int(f*float64(len(samples))))]) }
	var total time.Duration
	for _, d := range samples {
		total += d
	}
	fmt.Fprintf(os.Stderr, "roundtrip: %d samples: p50 %.1f us, p90 %.1f us, p99 %.1f us, max %.1f us (%.0f round trips/s)\n",
		len(samples), q(0.5), q(0.9), q(0.99), us(samples[len(samples)-1]), float64(len(samples))/total.Seconds())
	fmt.Fprintf(os.Stderr, "roundtrip: per round trip: CPU time parent %.1f us, worker 1 %.1f us; %.1f allocs in the parent\n",
		us(parentCPU)/float64(len(samples)), us(workerCPU)/float64(len(samples)), float64(ms1.Mallocs-ms0.Mallocs)/float64(len(samples)))
	b.rtUS = q(0.5)
	return nil
}

// request is Request retried while the worker's queue is full (Request
// fails at once with ErrQueueFull then, as Send does: after a flood the
// parent's queue to a worker can still be full), until ctx is done.
func (b *bench) request(ctx context.Context, id int, data []byte) ([]byte, error) {
	for spins := 0; ; spins++ {
		reply, err := b.c.Request(ctx, id, data)
		if !errors.Is(err, prefork.ErrQueueFull) || ctx.Err() != nil {
			return reply, err
		}
		backoff(spins)
	}
}

// workerCPU returns worker id's CPU time so far (user and system).
func (b *bench) workerCPU(ctx context.Context, id int) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	data, err := b.request(ctx, id, []byte(`{"op":"cpu"}`))
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseInt(string(data), 10, 64)
	return time.Duration(n) * time.Microsecond, err
}

// cpuTime returns this process's CPU time so far (user and system).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// flood asks worker 1 to flood to and waits for its answer, which comes
// after the last message and the end marker.
func (b *bench) flood(to, n, window int) (floodResult, error) {
	cmd, _ := json.Marshal(command{Op: "flood", To: to, N: n, Window: window, Max: b.max})
	ctx, cancel := context.WithTimeout(context.Background(), b.max+30*time.Second)
	defer cancel()
	var r floodResult
	data, err := b.request(ctx, 1, cmd)
	if err == nil {
		err = json.Unmarshal(data, &r)
	}
	return r, err
}

// takeMark returns the control message that match accepts if it has
// arrived, without waiting.
func (b *bench) takeMark(match func(mark) bool) (mark, bool) {
	for {
		select {
		case m := <-b.marks:
			if match(m) {
				return m, true
			}
			fmt.Fprintf(os.Stderr, "ipc: unexpected control message %q from %d\n", m.data, m.from)
		default:
			return mark{}, false
		}
	}
}

func (b *bench) oneWay() error {
	b.recv.Store(0)
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	t0 := time.Now()
	r, err := b.flood(prefork.Parent, b.oneway, 0)
	runtime.ReadMemStats(&ms1)
	if err != nil {
		return fmt.Errorf("one-way: worker 1: %w", err)
	}
	// The end marker came on the same channel as the answer, before it:
	// the parent's OnMessage has already seen it.
	end, ok := b.takeMark(func(m mark) bool { return m.from == 1 && m.data == endMark })
	got := b.recv.Load()
	if !ok || got != int64(r.Sent) {
		return fmt.Errorf("one-way: parent received %d of %d messages (end marker received: %v)", got, r.Sent, ok)
	}
	elapsed := end.at.Sub(t0)
	b.onewayRate = float64(got) / elapsed.Seconds()
	b.recvAllocs = float64(ms1.Mallocs-ms0.Mallocs) / float64(got)
	fmt.Fprintf(os.Stderr, "one-way: worker 1 sent %d in %.3fs (timed out: %v; ErrQueueFull %d times, %d sleeps; %.2f allocs/Send in the worker); parent received %d in %.3fs: %.0f msg/s; %.2f allocs/msg in the parent, %d GCs\n",
		r.Sent, r.Seconds, r.TimedOut, r.Retries, r.Sleeps, r.AllocsPerMsg, got, elapsed.Seconds(), b.onewayRate, b.recvAllocs, ms1.NumGC-ms0.NumGC)
	return nil
}

// relayed measures worker 1 flooding worker 2 through the parent, with
// window = 0 (as fast as worker 1's queue takes them) or a window.
//
// The clock stops when the parent gets worker 2's report of the end
// marker. The parent may have dropped the end marker as well as messages,
// so after worker 1's answer (by then the parent has relayed, or dropped,
// everything worker 1 sent) the parent asks worker 2 to "take" its count:
// that request travels behind every relayed message and the end marker,
// and worker 2 reports the end marker before it answers, so when the
// answer is in, either the report is too, or the end marker was dropped and
// the answer is the end (a little late: one more hop).
func (b *bench) relayed(window int) error {
	name := "relay"
	if window > 0 {
		name = fmt.Sprintf("relay (window %d)", window)
	}
	t0 := time.Now()
	r, err := b.flood(2, b.relay, window)
	if err != nil {
		return fmt.Errorf("%s: worker 1: %w", name, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	taken, err := b.request(ctx, 2, []byte(`{"op":"take"}`))
	tTaken := time.Now()
	cancel()
	if err != nil {
		return fmt.Errorf("%s: worker 2: %w", name, err)
	}
	got, _ := strconv.ParseInt(string(taken), 10, 64)
	note := ""
	end, ok := b.takeMark(func(m mark) bool { return m.from == 2 && strings.HasPrefix(m.data, gotPrefix) })
	if ok {
		n, _ := strconv.ParseInt(end.data[len(gotPrefix):], 10, 64)
		got += n // taken is 0 then
	} else {
		end.at = tTaken
		note = " (the end marker was dropped too: timed to worker 2's answer to a request behind it)"
	}
	dropped := int64(r.Sent) - got
	elapsed := end.at.Sub(t0)
	rate := float64(got) / elapsed.Seconds()
	fmt.Fprintf(os.Stderr, "%s: worker 1 sent %d in %.3fs (timed out: %v; ErrQueueFull %d times, %d sleeps, %d window waits); worker 2 received %d in %.3fs%s: %.0f msg/s; the parent dropped %d\n",
		name, r.Sent, r.Seconds, r.TimedOut, r.Retries, r.Sleeps, r.WindowWaits, got, elapsed.Seconds(), note, rate, dropped)
	if window > 0 {
		if got != int64(r.Sent) {
			return fmt.Errorf("%s: worker 2 received %d of %d messages", name, got, r.Sent)
		}
		b.windowedRate = rate
		return nil
	}
	b.relayRate, b.relayDropped = rate, dropped
	return nil
}

// parentSend measures the parent's Send to worker 1: its rate and its
// allocations per message, from the first Send until worker 1 has them all.
func (b *bench) parentSend() error {
	p := payload('s')
	var ms0, ms1 runtime.MemStats
	sent, retries, sleeps := 0, 0, 0
	runtime.ReadMemStats(&ms0)
	t0 := time.Now()
	deadline := t0.Add(b.max)
	spins := 0
	timedOut := false
	for sent < b.send && !timedOut {
		if sent&1023 == 0 && time.Now().After(deadline) {
			timedOut = true
			break
		}
		err := b.c.Send(1, p)
		if err == nil {
			sent++
			spins = 0
			continue
		}
		if !errors.Is(err, prefork.ErrQueueFull) {
			return fmt.Errorf("parent send: %w", err)
		}
		retries++
		if backoff(spins) {
			sleeps++
		}
		spins++
		if spins&63 == 0 && time.Now().After(deadline) {
			timedOut = true
		}
	}
	sendTime := time.Since(t0)
	if err := sendControl(b.c, 1, []byte(endMark)); err != nil {
		return fmt.Errorf("parent send: end marker: %w", err)
	}
	var end mark
	select {
	case end = <-b.marks:
	case <-time.After(30 * time.Second):
		return fmt.Errorf("parent send: worker 1 did not report within 30s of the last of %d messages", sent)
	}
	runtime.ReadMemStats(&ms1)
	if end.from != 1 || !strings.HasPrefix(end.data, gotPrefix) {
		return fmt.Errorf("parent send: unexpected control message %q from %d", end.data, end.from)
	}
	got, _ := strconv.Atoi(end.data[len(gotPrefix):])
	elapsed := end.at.Sub(t0)
	b.sendAllocs = float64(ms1.Mallocs-ms0.Mallocs) / float64(sent)
	b.sendRate = float64(got) / elapsed.Seconds()
	fmt.Fprintf(os.Stderr, "parent send: sent %d in %.3fs (timed out: %v; ErrQueueFull %d times, %d sleeps); worker 1 received %d in %.3fs: %.0f msg/s; %.2f allocs/msg in the parent, %d GCs\n",
		sent, sendTime.Seconds(), timedOut, retries, sleeps, got, elapsed.Seconds(), b.sendRate, b.sendAllocs, ms1.NumGC-ms0.NumGC)
	if got != sent {
		return fmt.Errorf("parent send: worker 1 received %d of %d messages", got, sent)
	}
	return nil
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
