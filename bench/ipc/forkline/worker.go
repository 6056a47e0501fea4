package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/forkline/forkline/prefork"
)

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
