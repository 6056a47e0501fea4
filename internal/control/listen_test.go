//go:build unix

package control

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestListenMode(t *testing.T) {
	// With no umask the file would be 0777 if Listen did not set its
	// mode. The umask is the process's: this test does not run in
	// parallel with others.
	defer syscall.Umask(syscall.Umask(0))
	s := serve(t, &fakeHandler{status: testStatus})
	fi, err := os.Lstat(s.path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want a socket, 0600", fi.Mode())
	}
}

func TestListenReplacesStale(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.sock")
	old, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	old.SetUnlinkOnClose(false)
	old.Close() // a parent that died: the file stays, nothing listens
	if _, err := os.Lstat(path); err != nil {
		t.Fatal(err)
	}
	s := serveAt(t, path, &fakeHandler{status: testStatus})
	if a := dialRaw(t, s.path).do(`{"cmd":"status"}`); a["ok"] != true {
		t.Errorf("answer: %v", a)
	}
}

func TestListenRefusesServed(t *testing.T) {
	s := serve(t, &fakeHandler{status: testStatus})
	if ln, err := Listen(s.path); err == nil || !strings.Contains(err.Error(), "something serves it already") {
		if ln != nil {
			ln.Close()
		}
		t.Fatalf("Listen on a served socket: %v", err)
	}
	if a := dialRaw(t, s.path).do(`{"cmd":"status"}`); a["ok"] != true {
		t.Errorf("the first server after the second's Listen: %v", a)
	}
}

func TestListenRefusesNonSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.sock")
	if err := os.WriteFile(path, []byte("data"), 0o600); err != nil {
		t.Fatal(err)
	}
	if ln, err := Listen(path); err == nil || !strings.Contains(err.Error(), "not a socket") {
		if ln != nil {
			ln.Close()
		}
		t.Fatalf("Listen on a file: %v", err)
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "data" {
		t.Errorf("the file was touched: %q, %v", b, err)
	}
}

// The file goes when Serve ends, or when the listener closes without it.
func TestCloseRemovesFile(t *testing.T) {
	s := serve(t, &fakeHandler{status: testStatus})
	if err := s.stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(s.path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after Serve: %v, want the file gone", err)
	}

	path := filepath.Join(t.TempDir(), "c.sock")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after Close: %v, want the file gone", err)
	}
}

func TestDialErrors(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, "stale.sock")
	old, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	old.SetUnlinkOnClose(false)
	old.Close()
	for _, tt := range []struct {
		path  string
		errno syscall.Errno
		text  string
	}{
		{stale, syscall.ECONNREFUSED, "cannot reach the control socket at " + stale + ": connection refused"},
		{filepath.Join(dir, "none.sock"), syscall.ENOENT, "no such file or directory"},
	} {
		c, err := Dial(tt.path)
		if err == nil {
			c.Close()
			t.Fatalf("Dial(%s) succeeded", tt.path)
		}
		if !errors.Is(err, tt.errno) || !strings.Contains(err.Error(), tt.text) {
			t.Errorf("Dial(%s): %v, want %q wrapping %v", tt.path, err, tt.text, tt.errno)
		}
	}
}

// A Client's answer when the server refuses its request.
func TestClientError(t *testing.T) {
	s := serve(t, &fakeHandler{status: testStatus})
	c, err := Dial(s.path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Do(context.Background(), Request{Cmd: "nope"}); err == nil || !strings.Contains(err.Error(), `unknown command "nope"`) {
		t.Errorf("Do: %v", err)
	}
	if _, err := c.Status(context.Background()); err != nil {
		t.Errorf("Status after an error answer: %v", err)
	}
}
