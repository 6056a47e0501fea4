// Command forkline measures forkline's messaging between a parent and its
// two workers, the way ipc-node.js measures Node's cluster. The ipc suite
// (bench/ipc, `make bench-ipc`) runs both.
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
//	forkline [-rt 20000] [-warmup 2000] [-oneway 2000000] [-relay 1000000] [-window 16384] [-send 1000000] [-max 3s] [-timeout 2m]
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime"
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

// cpuTime returns this process's CPU time so far (user and system).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
