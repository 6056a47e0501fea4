package prefork_test

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/forkline/forkline/prefork"
)

// In-process clusters: the parent runs in the test process itself, so that
// a test can use its API (Send, Request, Workers, Reload) directly and see
// its events as they are, typed. The workers are this test binary running
// the "messenger" helper. The parent asks a worker to act with a request
// whose payload is a command. Parents run side by side (t.Parallel):
// prefork.KeepGOMAXPROCS keeps each from setting the process's GOMAXPROCS,
// and prefork.WorkerEnv names the workers' helper, where t.Setenv would
// forbid t.Parallel.
func init() { registerHelper("messenger", messengerMain) }

const (
	// envMessengerLog is the file messenger workers append their JSON log
	// records to; envMessengerConfig, a messengerConfig each reads at start.
	envMessengerLog    = "MESSENGER_LOG"
	envMessengerConfig = "MESSENGER_CONFIG"
)

// messengerConfig is what a messenger worker reads at start: a reload's
// new generation reads it again, as a new deploy reads its config.
type messengerConfig struct {
	MaxMessageSize int `json:"max_message_size,omitempty"`
	CrashSlot      int `json:"crash_slot,omitempty"` // the worker of this slot panics at start
}

// command is what the parent asks a messenger worker to do.
type command struct {
	Op   string `json:"op"`
	To   int    `json:"to"`
	N    int    `json:"n"`
	Data string `json:"data"`
	// Release: "bulk" sends SIGUSR1 to this pid at its first ErrQueueFull.
	Release int `json:"release,omitempty"`
}

// messengerMain is a worker (only ever started by an in-process parent)
// that serves HTTP, answers commands (runCommand), and reports every
// message it receives to the parent as "recv <self> from <sender> <data>",
// but for these:
//
//   - "pause D": the reader stops for D (a slow OnMessage), then reports
//     "paused D";
//   - "hold": the reader stops until the worker gets SIGUSR1 (10 s at
//     most), then reports "released";
//   - "panic": OnMessage panics;
//   - bulk messages (bulkSize bytes, numbered) are counted, not reported.
func messengerMain([]string) int {
	var c *prefork.Cluster
	var mc messengerConfig
	if data, err := os.ReadFile(os.Getenv(envMessengerConfig)); err == nil {
		if err := json.Unmarshal(data, &mc); err != nil {
			fmt.Fprintln(os.Stderr, "messenger config:", err)
			return 2
		}
	}
	var logOut io.Writer = os.Stderr
	if path := os.Getenv(envMessengerLog); path != "" {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			fmt.Fprintln(os.Stderr, "messenger log:", err)
			return 2
		}
		defer f.Close()
		logOut = f
	}
	if mc.CrashSlot != 0 && mc.CrashSlot == prefork.WorkerID() {
		panic("messenger: slot " + fmt.Sprint(mc.CrashSlot) + " crashes at start (its config says so)")
	}
	released := make(chan os.Signal, 1)
	signal.Notify(released, syscall.SIGUSR1) // before the worker is online
	c = prefork.New(prefork.Config{
		Addr:           "127.0.0.1:0",
		MaxMessageSize: mc.MaxMessageSize,
		Logger:         slog.New(slog.NewJSONHandler(logOut, &slog.HandlerOptions{Level: slog.LevelInfo})),
		OnMessage: func(m prefork.Message) {
			for _, f := range m.Files {
				f.Close()
			}
			switch data := string(m.Data); {
			case len(m.Data) >= bulkSize:
				bulk.count(m.Data)
			case strings.HasPrefix(data, "pause "):
				d, _ := time.ParseDuration(strings.TrimPrefix(data, "pause "))
				slowWork(d) // a slow OnMessage: the channel is not read meanwhile
				c.Send(prefork.Parent, []byte("paused "+d.String()))
			case data == "hold":
				hold := time.NewTimer(10 * time.Second) // a watchdog: the test releases it
				select {
				case <-released:
				case <-hold.C:
				}
				hold.Stop()
				c.Send(prefork.Parent, []byte("released"))
			case data == "panic":
				panic("OnMessage panicked on purpose")
			default:
				c.Send(prefork.Parent, fmt.Appendf(nil, "recv %d from %d %s", prefork.WorkerID(), m.From, m.Data))
			}
		},
		OnRequest: func(m prefork.Message) ([]byte, error) {
			var cmd command
			if err := m.Decode(&cmd); err != nil {
				return m.Data, nil // not a command: echo
			}
			return runCommand(c, cmd)
		},
	})
	err := c.Run(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "Hello from worker=%d pid=%d gen=%d\n", prefork.WorkerID(), os.Getpid(), prefork.Generation())
	}))
	if err != nil {
		fmt.Fprintln(os.Stderr, "messenger:", err)
		return 1
	}
	return 0
}

// slowWork is the slow work of a handler: it takes d.
func slowWork(d time.Duration) {
	work := time.NewTimer(d)
	defer work.Stop()
	<-work.C
}

// backOff is what a sender does at a full queue. Send never blocks, so it
// tries again a little later: pacing, not synchronisation (a busy retry
// would take the CPU that the parent and the receiver need to drain it).
func backOff() {
	pace := time.NewTimer(100 * time.Microsecond)
	defer pace.Stop()
	<-pace.C
}

// bulkSize is the size of a bulk message: one numbered in its first 8
// bytes, which the messenger counts rather than reports.
const bulkSize = 64 << 10

// bulkCounter counts the bulk messages a messenger received, and notes a
// gap or a message out of order. The reader goroutine counts; the
// "bulkcount" command reads.
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

// bulkResult is the answer of the "bulk" command.
type bulkResult struct {
	Sent int    `json:"sent"`
	Full int    `json:"full"` // how often Send said ErrQueueFull
	Err  string `json:"err"`  // the first ErrQueueFull's text
}

func runCommand(c *prefork.Cluster, cmd command) ([]byte, error) {
	switch cmd.Op {
	case "bulk":
		// cmd.N numbered bulk messages to cmd.To, as fast as the queue
		// takes them.
		buf := make([]byte, bulkSize)
		var res bulkResult
		deadline := time.Now().Add(30 * time.Second)
		for res.Sent < cmd.N {
			binary.LittleEndian.PutUint64(buf, uint64(res.Sent))
			err := c.Send(cmd.To, buf)
			if errors.Is(err, prefork.ErrQueueFull) {
				if res.Full++; res.Err == "" {
					res.Err = err.Error()
					if cmd.Release > 0 {
						syscall.Kill(cmd.Release, syscall.SIGUSR1)
					}
				}
				if time.Now().After(deadline) {
					return nil, fmt.Errorf("bulk: queue still full after 30 s, %d sent", res.Sent)
				}
				backOff()
				continue
			}
			if err != nil {
				return nil, err
			}
			res.Sent++
		}
		return json.Marshal(res)
	case "bulkcount":
		return fmt.Appendf(nil, "%d %v", bulk.next.Load(), !bulk.disorder.Load()), nil
	case "echo":
		return []byte(cmd.Data), nil
	case "send":
		data := []byte(cmd.Data)
		if cmd.N > 0 {
			data = bytes.Repeat([]byte("x"), cmd.N)
		}
		return nil, c.Send(cmd.To, data)
	case "seq":
		// n numbered messages, as fast as the queue takes them.
		var buf [8]byte
		for i := 0; i < cmd.N; {
			binary.LittleEndian.PutUint64(buf[:], uint64(i))
			err := c.Send(cmd.To, buf[:])
			if errors.Is(err, prefork.ErrQueueFull) {
				backOff()
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
		return io.ReadAll(r)
	case "sleep":
		d, _ := time.ParseDuration(cmd.Data)
		slowWork(d) // the slow work a request timeout is tested against
		return []byte("slept"), nil
	case "die":
		// Mid-request: the process ends before it answers.
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	case "panic":
		panic("OnRequest panicked on purpose")
	case "garbage", "forge", "unknown":
		return writeBehindBack(cmd.Op)
	}
	return nil, fmt.Errorf("unknown op %q", cmd.Op)
}

// writeBehindBack writes to the worker's channel socket behind forkline's
// back: garbage, a frame only the parent may send, or a control frame of a
// type a later version might define.
func writeBehindBack(op string) ([]byte, error) {
	fd := channelFD()
	if fd < 0 {
		return nil, errors.New("no channel socket found")
	}
	b := []byte("GARBAGE GARBAGE GARBAGE GARBAGE")
	switch op {
	case "forge":
		b = make([]byte, 24)
		b[0], b[1], b[2] = 0xF1, 1, 4 // magic, version, TypeDrain
	case "unknown":
		b = make([]byte, 24)
		b[0], b[1], b[2] = 0xF1, 1, 40
	}
	_, err := unix.Write(fd, b)
	return []byte("written"), err
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

// inProcessSpec says how to run an in-process cluster.
type inProcessSpec struct {
	workers          int
	heartbeatTimeout time.Duration
	onMessage        func(prefork.Message)                 // nil: collect on ip.msgs
	onRequest        func(prefork.Message) ([]byte, error) // nil: answer "parent got <data>"
	config           messengerConfig                       // the workers' (envMessengerConfig)
	steering         prefork.Steering
	stopTimeout      time.Duration // 0: 5 s
}

// inProcess is a cluster whose parent is the test process.
type inProcess struct {
	t      *testing.T
	c      *prefork.Cluster
	done   chan error // Serve's result
	events *feed[prefork.Event]
	msgs   *feed[prefork.Message]
	er     *reader[prefork.Event]
	mr     *reader[prefork.Message]
	logs   *feed[string] // the parent's JSON log records
	dir    string        // the workers' log and config files
	addr   string        // the address served

	stopOnce sync.Once
}

// startInProcess runs a parent here with n messenger workers and waits
// until the cluster is ready. onMessage, if set, replaces the default
// (collecting messages on ip.msgs).
func startInProcess(t *testing.T, n int, onMessage func(prefork.Message)) *inProcess {
	t.Helper()
	return startInProcessWith(t, inProcessSpec{workers: n, onMessage: onMessage})
}

func startInProcessWith(t *testing.T, spec inProcessSpec) *inProcess {
	t.Helper()
	ip := &inProcess{
		t:      t,
		done:   make(chan error, 1),
		events: newFeed[prefork.Event](),
		msgs:   newFeed[prefork.Message](),
		logs:   newFeed[string](),
		dir:    t.TempDir(),
	}
	ip.er, ip.mr = ip.events.reader(), ip.msgs.reader()
	ip.setConfig(spec.config)
	if spec.onMessage == nil {
		spec.onMessage = ip.msgs.add
	}
	if spec.onRequest == nil {
		spec.onRequest = func(m prefork.Message) ([]byte, error) { return append([]byte("parent got "), m.Data...), nil }
	}
	var logOut io.Writer = lineWriter{ip.logs}
	if testing.Verbose() {
		logOut = io.MultiWriter(logOut, os.Stderr)
	}
	ip.c = prefork.New(prefork.Config{
		Addr:             "127.0.0.1:0",
		Workers:          spec.workers,
		StopTimeout:      cmp.Or(spec.stopTimeout, 5*time.Second),
		HeartbeatTimeout: spec.heartbeatTimeout,
		Steering:         spec.steering,
		Logger:           slog.New(slog.NewJSONHandler(logOut, &slog.HandlerOptions{Level: slog.LevelDebug})),
		OnEvent: func(ev prefork.Event) {
			if ev.Type == prefork.EventFork || ev.Type == prefork.EventExit {
				ip.c.Workers() // an OnEvent may call the cluster: no deadlock
			}
			ip.events.add(ev)
		},
		OnMessage: spec.onMessage,
		OnRequest: spec.onRequest,
	})
	prefork.KeepGOMAXPROCS(ip.c)
	prefork.WorkerEnv(ip.c, useHelper("messenger"),
		envMessengerLog+"="+filepath.Join(ip.dir, "workers.log"),
		envMessengerConfig+"="+filepath.Join(ip.dir, "config.json"))
	go func() {
		err := ip.c.Serve(nil)
		ip.events.end() // every event is delivered when Serve returns
		ip.done <- err
	}()
	t.Cleanup(ip.cleanup)
	ip.addr = ip.event(20*time.Second, "the cluster ready", func(ev prefork.Event) bool { return ev.Type == prefork.EventReady }).Addr
	return ip
}

// setConfig writes the configuration the next workers start with.
func (ip *inProcess) setConfig(mc messengerConfig) {
	ip.t.Helper()
	data, _ := json.Marshal(mc)
	if err := os.WriteFile(filepath.Join(ip.dir, "config.json"), data, 0o644); err != nil {
		ip.t.Fatal(err)
	}
}

func (ip *inProcess) cleanup() {
	ip.stop()
	if ip.t.Failed() {
		ip.t.Logf("parent's log:\n%s\nworkers' log:\n%s", strings.Join(ip.logs.all(), "\n"), ip.workerLog())
	}
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
	return ip.er.await(ip.t, timeout, what+" event", match)
}

// message returns the next message that match accepts.
func (ip *inProcess) message(timeout time.Duration, what string, match func(prefork.Message) bool) prefork.Message {
	ip.t.Helper()
	return ip.mr.await(ip.t, timeout, what+" message", match)
}

// command asks worker id to run cmd and returns its answer.
func (ip *inProcess) command(id int, cmd command) ([]byte, error) {
	data, _ := json.Marshal(cmd)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return ip.c.Request(ctx, id, data)
}

// echo checks that worker id answers.
func (ip *inProcess) echo(id int) {
	ip.t.Helper()
	if got, err := ip.command(id, command{Op: "echo", Data: "still here"}); err != nil || string(got) != "still here" {
		ip.t.Errorf("worker %d: %q, %v", id, got, err)
	}
}

// logged returns the parent's log records that match accepts.
func (ip *inProcess) logged(match func(logRecord) bool) []logRecord {
	return parseLog(ip.logs.all(), match)
}

// workerLog is what the workers have logged so far.
func (ip *inProcess) workerLog() string {
	data, _ := os.ReadFile(filepath.Join(ip.dir, "workers.log"))
	return string(data)
}

// workerLogged returns the workers' log records that match accepts.
func (ip *inProcess) workerLogged(match func(logRecord) bool) []logRecord {
	var lines []string
	sc := bufio.NewScanner(strings.NewReader(ip.workerLog()))
	sc.Buffer(nil, 4<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	return parseLog(lines, match)
}

// lineWriter adds each write (a slog handler writes one record per call)
// to a feed, as a line.
type lineWriter struct{ f *feed[string] }

func (w lineWriter) Write(p []byte) (int, error) {
	w.f.add(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
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
