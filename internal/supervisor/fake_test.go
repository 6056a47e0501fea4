//go:build unix

package supervisor

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/forkline/forkline/internal/wire"
)

// The fakes behind the process seam: each started worker is a goroutine
// that speaks the protocol over in-memory channels, so that the tests run
// inside a testing/synctest bubble, where time advances only when every
// goroutine waits: a 30 s backoff costs nothing, and when a test says
// "after 2 s" it means exactly that.

// behaviour says how a fake worker acts; the zero value is a healthy one.
type behaviour struct {
	failStart  string        // report this failure instead of serving, then exit 1
	neverReady bool          // never accept
	readyAfter time.Duration // serve only after this long
	mute       bool          // answer no heartbeat
	noDrain    bool          // ignore drain requests and SIGTERM
}

// fakeStarter starts fake workers.
type fakeStarter struct {
	behave  func(Spec) behaviour // nil: every worker is healthy
	failing func(Spec) error     // nil: every start succeeds
	started chan *fakeWorker     // every worker started, in order

	mu      sync.Mutex
	nextPID int
	closed  bool
	gate    chan struct{} // closed while the parent "runs": see pause
}

func newFakeStarter() *fakeStarter {
	st := &fakeStarter{started: make(chan *fakeWorker, 1024), nextPID: 1000, gate: make(chan struct{})}
	close(st.gate)
	return st
}

// pause holds every answer to a heartbeat on the parent's side, as a
// stopped parent reads nothing; resume lets them through.
func (st *fakeStarter) pause() {
	st.mu.Lock()
	st.gate = make(chan struct{})
	st.mu.Unlock()
}

func (st *fakeStarter) resume() {
	st.mu.Lock()
	close(st.gate)
	st.mu.Unlock()
}

func (st *fakeStarter) opened() <-chan struct{} {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.gate
}

func (st *fakeStarter) Start(spec Spec) (Started, error) {
	if st.failing != nil {
		if err := st.failing(spec); err != nil {
			return Started{}, err
		}
	}
	var b behaviour
	if st.behave != nil {
		b = st.behave(spec)
	}
	st.mu.Lock()
	st.nextPID++
	pid := st.nextPID
	st.mu.Unlock()
	fw := &fakeWorker{
		spec: spec, pid: pid, b: b, st: st,
		toParent:  make(chan wire.Frame, 64),
		toWorker:  make(chan wire.Frame, 1024),
		sigs:      make(chan os.Signal, 8),
		crash:     make(chan int, 1),
		exited:    make(chan struct{}),
		pings:     make(chan uint64, 64),
		pongs:     make(chan uint64, 64),
		parentEnd: make(chan struct{}),
		beatEnd:   make(chan struct{}),
	}
	go fw.run()
	st.started <- fw
	s := Started{Process: fakeProc{fw}, Channel: fakeChannel{fw}}
	if spec.Welcome.Heartbeat {
		s.Beat = fakeBeat{fw}
	}
	return s, nil
}

func (st *fakeStarter) Close() {
	st.mu.Lock()
	st.closed = true
	st.mu.Unlock()
}

// fakeWorker is one fake worker process.
type fakeWorker struct {
	spec Spec
	pid  int
	b    behaviour
	st   *fakeStarter

	toParent chan wire.Frame // what it sends; closed when it exits
	toWorker chan wire.Frame // what the parent sends it
	sigs     chan os.Signal
	crash    chan int // the test makes it exit with this code
	exited   chan struct{}
	exit     Exit
	pings    chan uint64
	pongs    chan uint64

	parentEnd chan struct{} // the parent closed its end of the channel
	closeOnce sync.Once
	beatEnd   chan struct{}
	beatOnce  sync.Once
}

func (fw *fakeWorker) send(f wire.Frame) { fw.toParent <- f }

func (fw *fakeWorker) run() {
	fw.send(wire.Frame{Type: wire.TypeHello, From: uint32(fw.spec.ID), Payload: wire.Hello{MaxPayload: fw.spec.Welcome.MaxPayload}.Encode()})
	if fw.b.failStart != "" {
		fw.send(wire.Frame{Type: wire.TypeFailed, Payload: []byte(fw.b.failStart)})
		fw.end(Exit{Code: 1, Status: "exit status 1"})
		return
	}
	var ready <-chan time.Time
	switch {
	case fw.b.neverReady:
	case fw.b.readyAfter > 0:
		ready = time.After(fw.b.readyAfter) // the worker's own slow start
	default:
		fw.send(wire.Frame{Type: wire.TypeReady, Payload: []byte("127.0.0.1:9")})
	}
	for {
		select {
		case <-ready:
			fw.send(wire.Frame{Type: wire.TypeReady, Payload: []byte("127.0.0.1:9")})
		case f := <-fw.toWorker:
			if f.Type == wire.TypeDrain && !fw.b.noDrain {
				fw.end(Exit{Code: 0, Status: "exit status 0"})
				return
			}
		case sig := <-fw.sigs:
			switch {
			case sig == os.Kill:
				fw.end(Exit{Code: -1, Signal: sig, Status: "signal: killed"})
				return
			case sig == syscall.SIGTERM && !fw.b.noDrain:
				fw.end(Exit{Code: 0, Status: "exit status 0"})
				return
			}
		case code := <-fw.crash:
			fw.end(Exit{Code: code, Status: "exit status " + strconv.Itoa(code)})
			return
		case seq := <-fw.pings:
			if !fw.b.mute {
				fw.pongs <- seq
			}
		}
	}
}

func (fw *fakeWorker) end(ex Exit) {
	fw.exit = ex
	close(fw.toParent)
	close(fw.exited)
}

type fakeProc struct{ fw *fakeWorker }

func (p fakeProc) Pid() int { return p.fw.pid }

func (p fakeProc) Signal(sig os.Signal) error {
	select {
	case <-p.fw.exited:
	case p.fw.sigs <- sig:
	default:
	}
	return nil
}

func (p fakeProc) Wait() Exit {
	<-p.fw.exited
	return p.fw.exit
}

// fakeChannel is the parent's end of a fake worker's channel.
type fakeChannel struct{ fw *fakeWorker }

func (c fakeChannel) Recv() (wire.Frame, error) {
	select {
	case f, ok := <-c.fw.toParent:
		if !ok {
			return wire.Frame{}, io.EOF
		}
		return f, nil
	case <-c.fw.parentEnd:
		return wire.Frame{}, wire.ErrClosed
	}
}

func (c fakeChannel) put(f wire.Frame) error {
	select {
	case <-c.fw.exited:
		return wire.ErrClosed
	case <-c.fw.parentEnd:
		return wire.ErrClosed
	default:
	}
	select {
	case c.fw.toWorker <- f:
		return nil
	default:
		return wire.ErrQueueFull
	}
}

func (c fakeChannel) Send(f wire.Frame) error                        { return c.put(f) }
func (c fakeChannel) SendDirect(f wire.Frame) error                  { return c.put(f) }
func (c fakeChannel) SendControl(f wire.Frame) error                 { return c.put(f) }
func (c fakeChannel) SendWait(_ context.Context, f wire.Frame) error { return c.put(f) }
func (c fakeChannel) SetSendLimit(int)                               {}
func (c fakeChannel) SendLimit() int                                 { return c.fw.spec.Welcome.MaxPayload }
func (c fakeChannel) Close() error {
	c.fw.closeOnce.Do(func() { close(c.fw.parentEnd) })
	return nil
}

// fakeBeat is the parent's end of a fake worker's heartbeat socket.
type fakeBeat struct{ fw *fakeWorker }

func (b fakeBeat) Ping(seq uint64) error {
	select {
	case b.fw.pings <- seq:
	default: // a full socket loses the ping
	}
	return nil
}

func (b fakeBeat) Pong() (uint64, error) {
	select {
	case seq := <-b.fw.pongs:
		select {
		case <-b.fw.st.opened():
		case <-b.fw.beatEnd:
		}
		return seq, nil
	case <-b.fw.beatEnd:
		return 0, errors.New("closed")
	}
}

func (b fakeBeat) Close() error {
	b.fw.beatOnce.Do(func() { close(b.fw.beatEnd) })
	return nil
}

// fakeBind gives each slot a real descriptor that is not a socket, so
// that closing it is real and nothing listens.
func fakeBind(string, string, bool) (int, string, error) {
	fd, err := unix.Open(os.DevNull, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	return fd, "127.0.0.1:9", err
}

// harness runs a supervisor over fake workers inside a synctest bubble.
type harness struct {
	t      *testing.T
	s      *Supervisor
	st     *fakeStarter
	events chan Event
	done   chan error
	logs   *lockedLog
}

func start(t *testing.T, cfg Config, st *fakeStarter) *harness {
	t.Helper()
	h := &harness{t: t, st: st, events: make(chan Event, 4096), done: make(chan error, 1), logs: &lockedLog{}}
	if cfg.Workers == 0 {
		cfg.Workers = 2
	}
	cfg.Addrs = []Address{{Network: "tcp", Addr: "127.0.0.1:0"}}
	cfg.StopTimeout = max(cfg.StopTimeout, 5*time.Second)
	cfg.ReadyTimeout = max(cfg.ReadyTimeout, 30*time.Second)
	cfg.MaxMessageSize = 1 << 20
	cfg.Logger = slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg.OnEvent = func(ev Event) { h.events <- ev }
	cfg.Starter, cfg.Bind = st, fakeBind
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.s = s
	go func() { h.done <- s.Run() }()
	return h
}

// event returns the next event match accepts; none within a minute (of the
// bubble's time) fails the test.
func (h *harness) event(what string, match func(Event) bool) Event {
	h.t.Helper()
	watchdog := time.NewTimer(time.Minute)
	defer watchdog.Stop()
	for {
		select {
		case ev := <-h.events:
			if match(ev) {
				return ev
			}
		case <-watchdog.C:
			h.t.Fatalf("no %s event within a minute\nlog:\n%s", what, h.logs)
		}
	}
}

func (h *harness) ready() {
	h.t.Helper()
	h.event("ready", isType(EventReady))
}

// worker returns the next started fake worker.
func (h *harness) worker() *fakeWorker {
	h.t.Helper()
	select {
	case fw := <-h.st.started:
		return fw
	case <-time.After(time.Minute): // a watchdog in the bubble's time
		h.t.Fatal("no worker started within a minute")
		return nil
	}
}

// stop stops the cluster and checks Run's result.
func (h *harness) stop(want error) {
	h.t.Helper()
	h.s.Stop(false)
	if err := <-h.done; !errors.Is(err, want) {
		h.t.Errorf("Run returned %v, want %v", err, want)
	}
}

func isType(t EventType) func(Event) bool { return func(ev Event) bool { return ev.Type == t } }

func exitOf(pid int) func(Event) bool {
	return func(ev Event) bool { return ev.Type == EventExit && ev.Worker.PID == pid }
}

// lockedLog keeps the supervisor's log for the test to show or search.
type lockedLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *lockedLog) count(s string) int { return strings.Count(l.String(), s) }
