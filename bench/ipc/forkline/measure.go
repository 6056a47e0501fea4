package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/forkline/forkline/prefork"
)

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
	b.rtUS = reportRoundTrips(samples, parentCPU, workerCPU, ms1.Mallocs-ms0.Mallocs)
	return nil
}

// reportRoundTrips writes the percentiles and the CPU time per round trip
// on stderr and returns the median, in µs.
func reportRoundTrips(samples []time.Duration, parentCPU, workerCPU time.Duration, mallocs uint64) float64 {
	slices.Sort(samples)
	q := func(f float64) float64 { return us(samples[min(len(samples)-1, int(f*float64(len(samples))))]) }
	var total time.Duration
	for _, d := range samples {
		total += d
	}
	n := float64(len(samples))
	fmt.Fprintf(os.Stderr, "roundtrip: %d samples: p50 %.1f us, p90 %.1f us, p99 %.1f us, max %.1f us (%.0f round trips/s)\n",
		len(samples), q(0.5), q(0.9), q(0.99), us(samples[len(samples)-1]), n/total.Seconds())
	fmt.Fprintf(os.Stderr, "roundtrip: per round trip: CPU time parent %.1f us, worker 1 %.1f us; %.1f allocs in the parent\n",
		us(parentCPU)/n, us(workerCPU)/n, float64(mallocs)/n)
	return q(0.5)
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
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	t0 := time.Now()
	f, err := b.sendAll(t0.Add(b.max))
	if err != nil {
		return err
	}
	sendTime := time.Since(t0)
	if err := sendControl(b.c, 1, []byte(endMark)); err != nil {
		return fmt.Errorf("parent send: end marker: %w", err)
	}
	var end mark
	select {
	case end = <-b.marks:
	case <-time.After(30 * time.Second):
		return fmt.Errorf("parent send: worker 1 did not report within 30s of the last of %d messages", f.Sent)
	}
	runtime.ReadMemStats(&ms1)
	if end.from != 1 || !strings.HasPrefix(end.data, gotPrefix) {
		return fmt.Errorf("parent send: unexpected control message %q from %d", end.data, end.from)
	}
	got, _ := strconv.Atoi(end.data[len(gotPrefix):])
	elapsed := end.at.Sub(t0)
	b.sendAllocs = float64(ms1.Mallocs-ms0.Mallocs) / float64(f.Sent)
	b.sendRate = float64(got) / elapsed.Seconds()
	fmt.Fprintf(os.Stderr, "parent send: sent %d in %.3fs (timed out: %v; ErrQueueFull %d times, %d sleeps); worker 1 received %d in %.3fs: %.0f msg/s; %.2f allocs/msg in the parent, %d GCs\n",
		f.Sent, sendTime.Seconds(), f.TimedOut, f.Retries, f.Sleeps, got, elapsed.Seconds(), b.sendRate, b.sendAllocs, ms1.NumGC-ms0.NumGC)
	if got != f.Sent {
		return fmt.Errorf("parent send: worker 1 received %d of %d messages", got, f.Sent)
	}
	return nil
}

// sendAll is the parent's flood: -send payloads to worker 1 as fast as
// Send takes them, until deadline.
func (b *bench) sendAll(deadline time.Time) (floodResult, error) {
	p := payload('s')
	var f floodResult
	spins := 0
	for f.Sent < b.send && !f.TimedOut {
		if f.Sent&1023 == 0 && time.Now().After(deadline) {
			f.TimedOut = true
			break
		}
		err := b.c.Send(1, p)
		if err == nil {
			f.Sent++
			spins = 0
			continue
		}
		if !errors.Is(err, prefork.ErrQueueFull) {
			return f, fmt.Errorf("parent send: %w", err)
		}
		f.Retries++
		if backoff(spins) {
			f.Sleeps++
		}
		spins++
		if spins&63 == 0 && time.Now().After(deadline) {
			f.TimedOut = true
		}
	}
	return f, nil
}
