//go:build linux

package main

import (
	"bufio"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// userProgram is forkline run's worker in TestRunUser: it prints who it is
// (its Uid, Gid and Groups lines of /proc/self/status) and whether it may
// signal its parent, says READY=1 on its notify socket, and waits for its
// drain's SIGTERM.
const userProgram = `
import os, signal, socket, sys
st = dict(l.split(":", 1) for l in open("/proc/self/status") if ":" in l)
print("ids", ";".join(k + "=" + " ".join(st[k].split()) for k in ("Uid", "Gid", "Groups")), flush=True)
try:
    os.kill(os.getppid(), 0)
    print("kill-parent ok", flush=True)
except PermissionError:
    print("kill-parent EPERM", flush=True)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b"READY=1", os.environ["NOTIFY_SOCKET"])
while True:
    signal.pause()
`

// forkline run -user nobody runs its program as nobody: uid, gid, no
// supplementary groups; the program reaches its notify socket (READY=1
// makes the cluster ready) and cannot signal the parent.
func TestRunUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the parent starts its workers as another user")
	}
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Skip("no user nobody:", err)
	}
	python := pythonFor(t, nobody)
	// The forkline binary in a directory nobody may enter: its workers
	// start by executing it (t.TempDir is 0700).
	dir, err := os.MkdirTemp("", "forkline-run-user-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "forkline")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	cmd := exec.Command(bin, "run", "-addr", "127.0.0.1:0", "-workers", "2", "-log", "json", "-user", "nobody", "--", python, "-c", userProgram)
	cmd.Dir = dir
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, "LISTEN_") && !strings.HasPrefix(name, "FORKLINE_") && name != "NOTIFY_SOCKET" && name != "RUNTIME_DIRECTORY" {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGQUIT} // should this test die
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 64) // the workers' lines, from stdout
	ready := make(chan struct{})   // the parent logged "cluster ready"
	var log strings.Builder        // its stderr, for a failure
	var logMu sync.Mutex
	var readers sync.WaitGroup
	readers.Go(func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var rec struct{ Line string }
			if json.Unmarshal(sc.Bytes(), &rec) == nil {
				lines <- rec.Line
			}
		}
		io.Copy(io.Discard, stdout)
	})
	readers.Go(func() {
		sc := bufio.NewScanner(stderr)
		once := sync.OnceFunc(func() { close(ready) })
		for sc.Scan() {
			logMu.Lock()
			log.WriteString(sc.Text() + "\n")
			logMu.Unlock()
			var rec struct{ Msg string }
			if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Msg == "cluster ready" {
				once()
			}
		}
		io.Copy(io.Discard, stderr)
	})
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			cmd.Process.Signal(syscall.SIGQUIT) // a fast stop: the workers are killed
		}
		readers.Wait()
		cmd.Wait()
		if t.Failed() {
			logMu.Lock()
			t.Logf("forkline run's stderr:\n%s", log.String())
			logMu.Unlock()
		}
	})

	ids := func(id string) string { return strings.Repeat(id+" ", 3) + id }
	wantIDs := "ids Uid=" + ids(nobody.Uid) + ";Gid=" + ids(nobody.Gid) + ";Groups="
	var idLines, killLines int
	timeout := time.After(watchdog)
	for idLines < 2 || killLines < 2 {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("forkline run exited")
			}
			switch {
			case strings.HasPrefix(l, "ids "):
				idLines++
				if l != wantIDs {
					t.Errorf("a worker says %q, want %q", l, wantIDs)
				}
			case strings.HasPrefix(l, "kill-parent "):
				killLines++
				if l != "kill-parent EPERM" {
					t.Errorf("a worker says %q, want kill-parent EPERM", l)
				}
			}
		case <-timeout:
			t.Fatalf("%d of 2 workers said who they are within %v", idLines, watchdog)
		}
	}
	select {
	case <-ready:
	case <-time.After(watchdog):
		t.Fatalf("the cluster was not ready within %v: its workers' READY=1 did not arrive", watchdog)
	}
	stopped = true
	cmd.Process.Signal(syscall.SIGTERM)
	readers.Wait()
	if err := cmd.Wait(); err != nil {
		t.Errorf("forkline run after SIGTERM: %v", err)
	}
}

// pythonFor returns a python3 that u may execute (pyenv's, under /root,
// it may not), or skips the test.
func pythonFor(t *testing.T, u *user.User) string {
	t.Helper()
	var candidates []string
	if p, err := exec.LookPath("python3"); err == nil {
		if out, err := exec.Command(p, "-c", "import sys; print(sys.executable)").Output(); err == nil {
			candidates = append(candidates, strings.TrimSpace(string(out)))
		}
	}
	candidates = append(candidates, "/usr/bin/python3", "/usr/local/bin/python3")
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		t.Fatal(err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range candidates {
		c := exec.Command(p, "-c", "pass")
		c.Dir = "/"
		c.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}}
		if c.Run() == nil {
			return p
		}
	}
	t.Skip("no python3 that user", u.Username, "may execute")
	return ""
}
