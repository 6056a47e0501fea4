package supervisor

import (
	"os"
	"sync"
)

// EventType is a kind of event: a worker's, named after Node's cluster
// events, or the cluster's.
type EventType int

// The events. Package prefork exports the same values.
const (
	EventFork EventType = iota + 1
	EventOnline
	EventListening
	EventDisconnect
	EventExit
	EventReady     // the cluster is ready: every slot has served once
	EventReloading // a reload began; Gen is the new generation
	EventReloaded  // a reload ended; Err says why it failed, if it did
	EventStopping  // the cluster stops
	EventEligible  // whether the kernel may give a worker's slot a connection changed
	EventUpgrading // an upgrade of the parent began
	EventUpgraded  // the parent was upgraded in place (Err: why not)
)

// Event is one event. Worker is set for a worker's events.
type Event struct {
	Type     EventType
	Worker   Info
	Addr     string
	ExitCode int
	Signal   os.Signal
	Asked    bool
	Reason   string
	Err      error
	Gen      int // the cluster's events: the generation concerned
}

// dispatcher delivers events to OnEvent one at a time, in the order the
// supervisor produced them, on a goroutine of its own: the supervisor never
// waits for a callback, and a callback may call the supervisor back (even
// Reload, which waits for the loop) without deadlock.
type dispatcher struct {
	mu     sync.Mutex
	queue  []Event
	wake   chan struct{} // capacity 1
	closed bool
	done   chan struct{}
}

func startDispatcher(on func(Event)) *dispatcher {
	d := &dispatcher{wake: make(chan struct{}, 1), done: make(chan struct{})}
	go d.run(on)
	return d
}

func (d *dispatcher) emit(ev Event) {
	d.mu.Lock()
	d.queue = append(d.queue, ev)
	d.mu.Unlock()
	d.poke()
}

func (d *dispatcher) poke() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

func (d *dispatcher) run(on func(Event)) {
	defer close(d.done)
	for {
		d.mu.Lock()
		batch, closed := d.queue, d.closed
		d.queue = nil
		d.mu.Unlock()
		for _, ev := range batch {
			if on != nil {
				on(ev)
			}
		}
		if len(batch) == 0 {
			if closed {
				return
			}
			<-d.wake
		}
	}
}

// close delivers what is queued and returns when the last callback has.
func (d *dispatcher) close() {
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	d.poke()
	<-d.done
}
