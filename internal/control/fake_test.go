//go:build unix

package control

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// watchdog bounds every wait of the tests: a hang fails, it never times
// anything.
const watchdog = 10 * time.Second

// fakeHandler records the calls that change the cluster (Status is not
// recorded) and answers as its fields say.
type fakeHandler struct {
	status     Status
	statusErr  error
	reloadErr  error
	reloading  chan struct{}        // if not nil, Reload says it began here, then waits for ctx
	events     chan Event           // what Events returns; nil: Events fails
	subscribed chan context.Context // if not nil, gets Events' ctx
	upgradeErr error

	mu    sync.Mutex
	calls []string
}

func (f *fakeHandler) record(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, fmt.Sprintf(format, args...))
}

func (f *fakeHandler) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func (f *fakeHandler) Status(context.Context) (Status, error) { return f.status, f.statusErr }

func (f *fakeHandler) Reload(ctx context.Context) error {
	f.record("reload")
	if f.reloading != nil {
		close(f.reloading)
		<-ctx.Done()
		return ctx.Err()
	}
	return f.reloadErr
}

func (f *fakeHandler) Scale(n int) error { f.record("scale %d", n); return nil }

func (f *fakeHandler) Kill(id int, sig syscall.Signal) error {
	f.record("kill %d %d", id, int(sig))
	return nil
}

func (f *fakeHandler) Stop(context.Context) error { f.record("stop"); return nil }

func (f *fakeHandler) Events(ctx context.Context) (<-chan Event, error) {
	f.record("events")
	if f.subscribed != nil {
		f.subscribed <- ctx
	}
	if f.events == nil {
		return nil, errors.New("no events here")
	}
	return f.events, nil
}

func (f *fakeHandler) Upgrade(context.Context) error { f.record("upgrade"); return f.upgradeErr }

// testStatus is the fake cluster's status: 4 workers wanted.
var testStatus = Status{PID: 4242, Generation: 3, Workers: 4, ReloadsOK: 2, ReloadsFailed: 1,
	Slots: []Slot{{ID: 1, PID: 4250, Gen: 3, State: "listening", Eligible: true, RSS: 12 << 20, CPU: 1.5, Queue: 0, Backlog: 128, RTT: -1}}}

// syncBuffer is a log's buffer, read while the server may write.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// served is a running Serve, with its socket's path and its log.
type served struct {
	path string
	log  *syncBuffer
	stop func() error // cancels Serve and returns what it returned
}

// serve runs Serve with h on a socket of mode perm in a new directory.
func serve(t *testing.T, h Handler, perm ...os.FileMode) *served {
	t.Helper()
	return serveAt(t, filepath.Join(t.TempDir(), "c.sock"), h, perm...)
}

func serveAt(t *testing.T, path string, h Handler, perm ...os.FileMode) *served {
	t.Helper()
	mode := os.FileMode(0o600)
	if len(perm) > 0 {
		mode = perm[0]
	}
	ln, err := listen(path, mode)
	if errors.Is(err, errors.ErrUnsupported) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	s := &served{path: path, log: &syncBuffer{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, ln, h, slog.New(slog.NewTextHandler(s.log, nil))) }()
	var once sync.Once
	var serr error
	s.stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case serr = <-done:
			case <-time.After(watchdog):
				t.Fatal("Serve did not return after its ctx was cancelled")
			}
		})
		return serr
	}
	t.Cleanup(func() {
		if err := s.stop(); err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return s
}

// rawConn is a client that speaks the protocol by hand.
type rawConn struct {
	t *testing.T
	c *net.UnixConn
	r *bufio.Reader
}

func dialRaw(t *testing.T, path string) *rawConn {
	t.Helper()
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(watchdog))
	t.Cleanup(func() { c.Close() })
	return &rawConn{t: t, c: c, r: bufio.NewReader(c)}
}

func (rc *rawConn) send(line string) {
	rc.t.Helper()
	if _, err := rc.c.Write([]byte(line)); err != nil {
		rc.t.Fatal(err)
	}
}

// read reads one answer line and decodes it.
func (rc *rawConn) read() map[string]any {
	rc.t.Helper()
	line, err := rc.r.ReadBytes('\n')
	if err != nil {
		rc.t.Fatalf("reading an answer: %v (got %q)", err, line)
	}
	var a map[string]any
	if err := json.Unmarshal(line, &a); err != nil {
		rc.t.Fatalf("answer %q: %v", line, err)
	}
	return a
}

func (rc *rawConn) do(line string) map[string]any {
	rc.t.Helper()
	rc.send(line + "\n")
	return rc.read()
}

// eof waits until the server closes the connection.
func (rc *rawConn) eof() {
	rc.t.Helper()
	if line, err := rc.r.ReadBytes('\n'); !errors.Is(err, io.EOF) {
		rc.t.Fatalf("want EOF, got %q, %v", line, err)
	}
}
