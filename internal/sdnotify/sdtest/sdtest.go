// Package sdtest is a fake systemd service manager for tests of code that
// uses package sdnotify, or that runs a program which speaks sd_notify(3).
//
// A [Manager] listens on a unix datagram socket, learns each sender's pid
// from the kernel, and acts on what the real manager acts on: it keeps
// descriptors sent with FDSTORE=1 by FDNAME (deduplicated, as systemd
// does), closes them on FDSTOREREMOVE=1, closes at once those sent with
// BARRIER=1 (systemd-notify and sd_notify_barrier(3) wait for that), and
// delivers every notification, in order, to [Manager.Next] and
// [Manager.Wait].
//
// It needs Linux (SO_PASSCRED); elsewhere [New] skips the test.
package sdtest

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

// A Message is one notification.
type Message struct {
	PID   int      // the sender's, as the kernel reports it (SCM_CREDENTIALS)
	Lines []string // the datagram split at newlines and carriage returns, empty lines dropped
	// FDs are the descriptors attached, except with BARRIER=1. They stay
	// open, owned by the Manager, until Manager.Close; use Manager.Stored
	// for copies of your own.
	FDs []int
}

// Value returns the value of the first line KEY=value of m.
func (m Message) Value(key string) (string, bool) {
	for _, l := range m.Lines {
		if k, v, ok := strings.Cut(l, "="); ok && k == key {
			return v, true
		}
	}
	return "", false
}

// A Manager is a fake service manager; see the package documentation.
type Manager struct {
	t     testing.TB
	addr  string
	conn  *net.UnixConn
	msgs  chan Message  // closed by the reader when it returns
	stop  chan struct{} // closed by Close
	once  sync.Once
	mu    sync.Mutex
	store map[string][]int // the fd store, by FDNAME
	owned []int            // descriptors of delivered Messages
	err   error            // why the reader returned, when not closed
}

// New starts a Manager on a socket in t.TempDir(). It is closed when the
// test ends (t.Cleanup).
func New(t testing.TB) *Manager {
	t.Helper()
	addr := filepath.Join(t.TempDir(), "notify")
	if len(addr) > 107 {
		t.Fatalf("sdtest: socket path %s is longer than 107 bytes: set a shorter TMPDIR or GOTMPDIR", addr)
	}
	return start(t, addr)
}

// NewAbstract is [New] on a random name in Linux's abstract namespace
// (NOTIFY_SOCKET=@name).
func NewAbstract(t testing.TB) *Manager {
	t.Helper()
	return start(t, "@sdtest-"+rand.Text())
}

func start(t testing.TB, addr string) *Manager {
	t.Helper()
	conn, err := listen(addr)
	if errors.Is(err, errors.ErrUnsupported) {
		t.Skipf("sdtest: %v", err)
	}
	if err != nil {
		t.Fatalf("sdtest: %v", err)
	}
	m := &Manager{t: t, addr: addr, conn: conn, msgs: make(chan Message, 128),
		stop: make(chan struct{}), store: map[string][]int{}}
	go m.read()
	t.Cleanup(m.Close)
	return m
}

// Socket returns the socket's address, the value of NOTIFY_SOCKET.
func (m *Manager) Socket() string { return m.addr }

// Env returns NOTIFY_SOCKET=address, to append to a child's environment.
func (m *Manager) Env() []string { return []string{"NOTIFY_SOCKET=" + m.addr} }

// Next returns the next notification, waiting until ctx is done. After
// Close, it returns an error.
func (m *Manager) Next(ctx context.Context) (Message, error) {
	select {
	case msg, ok := <-m.msgs:
		if !ok {
			m.mu.Lock()
			defer m.mu.Unlock()
			if m.err != nil {
				return Message{}, m.err
			}
			return Message{}, errors.New("sdtest: manager closed")
		}
		return msg, nil
	case <-ctx.Done():
		return Message{}, fmt.Errorf("sdtest: waiting for a notification: %w", ctx.Err())
	}
}

// Wait returns the first notification with the line line, for example
// "READY=1", logging the ones before it. It fails the test when ctx is done
// first, so it must be called from the test's goroutine.
func (m *Manager) Wait(ctx context.Context, line string) Message {
	m.t.Helper()
	for {
		msg, err := m.Next(ctx)
		if err != nil {
			m.t.Fatalf("sdtest: waiting for %q: %v", line, err)
		}
		if slices.Contains(msg.Lines, line) {
			return msg
		}
		m.t.Logf("sdtest: waiting for %q, skipped %q from pid %d", line, msg.Lines, msg.PID)
	}
}

// Stored returns copies (close-on-exec) of the descriptors in the fd store,
// by name, in the order they were stored. The caller owns them and must
// close them. It fails the test when a copy cannot be made, so it must be
// called from the test's goroutine.
func (m *Manager) Stored() map[string][]int {
	m.t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string][]int{}
	for name, fds := range m.store {
		for _, fd := range fds {
			c, err := dup(fd)
			if err != nil {
				m.t.Fatalf("sdtest: copying stored descriptor %d (%q): %v", fd, name, err)
			}
			out[name] = append(out[name], c)
		}
	}
	return out
}

// Close closes the socket and every descriptor the Manager holds (not the
// copies from Stored). It can safely be called more than once.
func (m *Manager) Close() {
	m.once.Do(func() {
		close(m.stop)
		m.conn.Close()
		for range m.msgs { // the reader closes msgs when it returns
		}
		m.mu.Lock()
		defer m.mu.Unlock()
		for _, fds := range m.store {
			closeAll(fds)
		}
		closeAll(m.owned)
		m.store, m.owned = nil, nil
	})
}

// read receives notifications until Close, acting on each before it is
// delivered, as the manager would whether anyone looks or not.
func (m *Manager) read() {
	defer close(m.msgs)
	buf := make([]byte, 64<<10)
	for {
		msg, err := receive(m.conn, buf)
		if err != nil {
			select {
			case <-m.stop:
			default:
				m.mu.Lock()
				m.err = fmt.Errorf("sdtest: receiving: %w", err)
				m.mu.Unlock()
			}
			return
		}
		m.act(&msg)
		select {
		case m.msgs <- msg:
		case <-m.stop:
			return
		}
	}
}

func (m *Manager) act(msg *Message) {
	if slices.Contains(msg.Lines, "BARRIER=1") {
		closeAll(msg.FDs)
		msg.FDs = nil
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.owned = append(m.owned, msg.FDs...)
	name, ok := msg.Value("FDNAME")
	if slices.Contains(msg.Lines, "FDSTOREREMOVE=1") && ok {
		closeAll(m.store[name])
		delete(m.store, name)
	}
	if !slices.Contains(msg.Lines, "FDSTORE=1") {
		return
	}
	if !ok {
		name = "stored"
	}
	for _, fd := range msg.FDs {
		if m.holds(fd) {
			continue
		}
		c, err := dup(fd)
		if err != nil {
			m.err = fmt.Errorf("sdtest: storing descriptor %d: %w", fd, err)
			continue
		}
		m.store[name] = append(m.store[name], c)
	}
}

// holds reports whether the store already has fd's file.
func (m *Manager) holds(fd int) bool {
	for _, fds := range m.store {
		for _, s := range fds {
			if sameFile(s, fd) {
				return true
			}
		}
	}
	return false
}

// lines splits a datagram as systemd does (strv_split(buf, "\n\r")).
func lines(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == '\n' || r == '\r' })
}

func closeAll(fds []int) {
	for _, fd := range fds {
		closeFD(fd)
	}
}
