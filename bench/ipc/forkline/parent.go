package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	"github.com/forkline/forkline/prefork"
)

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
	b.c = prefork.New(b.config())
	served := make(chan error, 1)
	go func() { served <- b.c.Serve(nil) }()

	timedOut, watchdog := b.watchdog(timeout)
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
	b.print()
	return 0
}

// config is the parent's cluster: 2 workers, the events that say when
// they are ready or gone, and the messages that count.
func (b *bench) config() prefork.Config {
	return prefork.Config{
		Addr:        "127.0.0.1:0",
		Workers:     2,
		StopTimeout: 5 * time.Second,
		Logger:      slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
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
	}
}

// watchdog: past the bound, say so and stop the cluster (its workers get
// SIGTERM, then SIGKILL after StopTimeout), which makes the measurement in
// progress fail; exit regardless if even that does not end within 10 s.
func (b *bench) watchdog(timeout time.Duration) (*atomic.Bool, *time.Timer) {
	timedOut := new(atomic.Bool)
	t := time.AfterFunc(timeout, func() {
		timedOut.Store(true)
		fmt.Fprintf(os.Stderr, "ipc: timed out after %v: stopping the workers and exiting\n", timeout)
		time.AfterFunc(10*time.Second, func() {
			fmt.Fprintln(os.Stderr, "ipc: the cluster did not stop within 10s of Shutdown; exiting anyway")
			os.Exit(2)
		})
		go b.c.Shutdown(context.Background())
	})
	return timedOut, t
}

// print writes the figures on stdout, one "key value" line each.
func (b *bench) print() {
	fmt.Printf("ipc-roundtrip-us %.1f\n", b.rtUS)
	fmt.Printf("ipc-oneway-msgs-per-s %.0f\n", b.onewayRate)
	fmt.Printf("ipc-relay-msgs-per-s %.0f\n", b.relayRate)
	fmt.Printf("ipc-send-allocs-per-msg %.2f\n", b.sendAllocs)
	fmt.Printf("ipc-recv-allocs-per-msg %.2f\n", b.recvAllocs)
	fmt.Printf("ipc-relay-dropped %d\n", b.relayDropped)
	fmt.Printf("ipc-relay-windowed-msgs-per-s %.0f\n", b.windowedRate)
	fmt.Printf("ipc-send-msgs-per-s %.0f\n", b.sendRate)
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
