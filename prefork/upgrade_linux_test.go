package prefork_test

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/forkline/forkline/internal/control"
)

// builds makes a directory of executables anyone can run: copies of this
// test binary, each with its own mark at the end (an ELF file runs with
// bytes after it), and installs one of them as dir/parent.
type builds struct {
	t      *testing.T
	dir    string
	parent string
}

func newBuilds(t *testing.T) *builds {
	dir, err := os.MkdirTemp("", "forkline-upgrade-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return &builds{t: t, dir: dir, parent: filepath.Join(dir, "parent")}
}

// make writes a build of this binary ending with mark.
func (b *builds) make(name, mark string) string {
	b.t.Helper()
	exe, err := os.Executable()
	if err != nil {
		b.t.Fatal(err)
	}
	src, err := os.Open(exe)
	if err != nil {
		b.t.Fatal(err)
	}
	defer src.Close()
	path := filepath.Join(b.dir, name)
	syscall.ForkLock.RLock() // no fork holds it open for writing: see sharedExecutable
	defer syscall.ForkLock.RUnlock()
	dst, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		b.t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		b.t.Fatal(err)
	}
	if _, err := dst.WriteString(mark); err != nil {
		b.t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		b.t.Fatal(err)
	}
	return path
}

// install replaces dir/parent with a copy of path, atomically (a rename),
// as a deploy does, and returns the new file's identity.
func (b *builds) install(path string) os.FileInfo {
	b.t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		b.t.Fatal(err)
	}
	tmp := b.parent + ".new"
	syscall.ForkLock.RLock() // no fork holds it open for writing: see sharedExecutable
	err = os.WriteFile(tmp, data, 0o755)
	syscall.ForkLock.RUnlock()
	if err != nil {
		b.t.Fatal(err)
	}
	if err := os.Rename(tmp, b.parent); err != nil {
		b.t.Fatal(err)
	}
	fi, err := os.Stat(b.parent)
	if err != nil {
		b.t.Fatal(err)
	}
	return fi
}

// exeOf is the file process pid runs.
func exeOf(t *testing.T, pid int) os.FileInfo {
	t.Helper()
	fi, err := os.Stat("/proc/" + itoa(pid) + "/exe")
	if err != nil {
		t.Fatal(err)
	}
	return fi
}

func itoa(n int) string { return strconv.Itoa(n) }

// startUpgradable starts the hello helper from dir/parent, so that an
// upgrade executes what the test installs there.
func startUpgradable(t *testing.T, b *builds, args ...string) *testCluster {
	t.Helper()
	return startHelper(t, helperSpec{helper: "exec", env: []string{envExecPath + "=" + b.parent, envExecHelper + "=hello"}}, args...)
}

const upgrades = 20

// TestUpgradeInPlace: 20 upgrades, alternating two builds, under clients
// on fresh and on keep-alive connections: no request fails; the parent's
// pid and the workers' stay the same, and the parent runs the file
// installed; afterwards a reload, a crash, scaling and the control socket
// work.
func TestUpgradeInPlace(t *testing.T) {
	// Not parallel: 20 upgrades of a -race binary under 8 clients load
	// both CPUs; beside the rest they slowed other tests past their bounds.
	b := newBuilds(t)
	builds := []string{b.make("a", "\nforkline-test-build:a\n"), b.make("b", "\nforkline-test-build:b\n")}
	b.install(builds[0])
	sock := filepath.Join(b.dir, "ctl.sock")
	c := startUpgradable(t, b, "-workers", "2", "-control", sock)
	addr, pids := c.ready()
	// 20 upgrades take 20-60 s here under -race: the clients' bound is longer.
	fresh := startLoadWith(&load{maxTime: 3 * time.Minute}, addr, 4)
	keep := startLoadWith(&load{keepAlive: true, maxTime: 3 * time.Minute}, addr, 4)
	fresh.awaitOK(t, 20, 20*time.Second)
	keep.awaitOK(t, 20, 20*time.Second)

	start := time.Now()
	var fdsAfterFirst int
	var firstFDs map[int]string
	for i := 1; i <= upgrades; i++ {
		want := b.install(builds[i%2])
		before, _ := fresh.counts()
		c.signal(syscall.SIGUSR2)
		c.awaitLog(30*time.Second, "upgrade "+itoa(i), func(r logRecord) bool { return r.str("msg") == "upgraded in place" })
		if got := exeOf(t, c.pid); !os.SameFile(got, want) {
			t.Fatalf("upgrade %d: the parent does not run the file installed", i)
		}
		fresh.awaitOK(t, before+10, 20*time.Second) // served on, by the new parent's workers: the same
		if i == 1 {
			firstFDs = openFDs(t, c.pid)
			fdsAfterFirst = len(firstFDs)
		}
	}
	// Nothing the upgrades carry piles up: the parent's descriptors are as
	// many after the last as after the first.
	if n := len(openFDs(t, c.pid)); n != fdsAfterFirst {
		t.Errorf("the parent has %d descriptors after %d upgrades, %d after the first: %v, then %v", n, upgrades, fdsAfterFirst, firstFDs, openFDs(t, c.pid))
	}
	elapsed := time.Since(start)
	fresh.finish()
	keep.finish()
	for _, l := range []*load{fresh, keep} {
		if f := l.failed(); len(f) > 0 {
			t.Errorf("%d requests failed over %d upgrades: %v", len(f), upgrades, l.errors())
		}
	}
	t.Logf("%d upgrades in %v; fresh: %s; keep-alive: %s", upgrades, elapsed.Round(time.Millisecond), fresh.summary(), keep.summary())
	for _, l := range []*load{fresh, keep} {
		l.mu.Lock()
		for pid := range l.pids[1] {
			if !containsPID(pids, pid) {
				t.Errorf("pid %d answered: the workers were %v", pid, pids)
			}
		}
		if len(l.gens) != 1 {
			t.Errorf("generations answered: %v, want only 1", l.gens)
		}
		l.mu.Unlock()
	}

	// One more with the forkline command, which waits for the outcome.
	want := b.install(builds[0])
	if out, code := forkline(t, sock, "upgrade"); code != 0 || !strings.Contains(out, "upgraded") {
		t.Fatalf("forkline upgrade: exit %d: %s", code, out)
	}
	if !os.SameFile(exeOf(t, c.pid), want) {
		t.Fatal("after forkline upgrade the parent does not run the file installed")
	}

	// Everything else still works: a message between workers, relayed by
	// the new parent,
	for sent := false; !sent; {
		body, err := fetch(addr, "/send?to=2&data=after-the-upgrades", requestTimeout)
		if err != nil && strings.Contains(err.Error(), "cannot send to itself") {
			continue // worker 2 answered: ask again, for worker 1
		}
		if err != nil {
			t.Fatalf("send: %v", err)
		}
		sent = strings.Contains(body, "worker=1 ")
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		body, err := fetch(addr, "/inbox", requestTimeout)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(body, "worker=2 ") && strings.Contains(body, "from 1: after-the-upgrades") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("worker 2 did not get worker 1's message: %q", body)
		}
	}
	// the control socket,
	cl, err := control.Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	st, err := cl.Status(context.Background())
	cl.Close()
	if err != nil || st.Upgrades != upgrades+1 || st.PID != c.pid || len(st.Slots) != 2 {
		t.Fatalf("status after the upgrades: %+v, %v", st, err)
	}
	c.signal(syscall.SIGHUP)
	c.awaitLog(30*time.Second, "a reload after the upgrades", func(r logRecord) bool { return r.str("msg") == "reloaded" && r.num("gen") == 2 })
	victim := mustGet(t, addr)
	for victim.gen != 2 { // a draining worker of generation 1 may answer once more
		victim = mustGet(t, addr)
	}
	syscall.Kill(victim.pid, syscall.SIGKILL)
	c.awaitLog(30*time.Second, "the killed worker replaced", func(r logRecord) bool {
		return r.str("msg") == "listening" && r.num("pid") != victim.pid && r.num("gen") == 2
	})
	c.signal(syscall.SIGTTIN)
	c.awaitLog(30*time.Second, "a third worker", func(r logRecord) bool { return r.str("msg") == "listening" && r.num("worker") == 3 })
	c.stopAndCheck()
}

func containsPID(pids map[int]int, pid int) bool {
	for _, p := range pids {
		if p == pid {
			return true
		}
	}
	return false
}

// TestUpgradeRefusedOrRolledBack: a new binary that fails its check is
// refused and the parent carries on; one that cannot adopt the state (its
// address has another name) gives it back, and the old executable carries
// on, same pid, same workers; a SIGHUP sent during an upgrade is applied
// once, after it.
func TestUpgradeRefusedOrRolledBack(t *testing.T) {
	t.Parallel()
	b := newBuilds(t)
	good := b.make("good", "\nforkline-test-build:good\n")
	bad := b.make("bad", badBuildMark)
	running := b.install(good)
	c := startUpgradable(t, b, "-workers", "2")
	addr, pids := c.ready()

	// Not a forkline program at all.
	syscall.ForkLock.RLock() // see sharedExecutable
	err := os.WriteFile(b.parent+".new", []byte("#!/bin/sh\nexit 3\n"), 0o755)
	syscall.ForkLock.RUnlock()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(b.parent+".new", b.parent); err != nil {
		t.Fatal(err)
	}
	c.signal(syscall.SIGUSR2)
	c.awaitLog(30*time.Second, "the refusal", func(r logRecord) bool { return r.str("msg") == "upgrade refused, this parent carries on" })
	if !os.SameFile(exeOf(t, c.pid), running) {
		t.Fatal("the parent's executable changed")
	}
	if a := mustGet(t, addr); !containsPID(pids, a.pid) {
		t.Fatalf("answered by %d, not one of %v", a.pid, pids)
	}

	// A forkline program that cannot adopt the state.
	b.install(bad)
	c.signal(syscall.SIGUSR2)
	c.awaitLog(30*time.Second, "the rollback", func(r logRecord) bool {
		return r.str("msg") == "upgrade rolled back: this is the previous parent again"
	})
	if !os.SameFile(exeOf(t, c.pid), running) {
		t.Fatal("after the rollback the parent does not run the old executable")
	}
	seen := map[int]bool{}
	for range 50 {
		a := mustGet(t, addr)
		seen[a.pid] = true
		if !containsPID(pids, a.pid) {
			t.Fatalf("answered by %d, not one of %v", a.pid, pids)
		}
	}

	// A SIGHUP during an upgrade: one reload, after it.
	b.install(good)
	c.signal(syscall.SIGUSR2)
	c.awaitLog(30*time.Second, "the upgrade beginning", func(r logRecord) bool { return r.str("msg") == "upgrading the parent in place" })
	c.signal(syscall.SIGHUP)
	c.awaitLog(30*time.Second, "the upgrade", func(r logRecord) bool { return r.str("msg") == "upgraded in place" })
	c.awaitLog(30*time.Second, "the reload after it", func(r logRecord) bool { return r.str("msg") == "reloaded" && r.num("gen") == 2 })
	c.stopAndCheck()
	if n := len(c.logged(func(r logRecord) bool { return r.str("msg") == "reloading" })); n != 1 {
		t.Errorf("%d reloads, want 1", n)
	}
}
