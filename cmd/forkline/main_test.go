//go:build linux || darwin || freebsd

package main

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
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/forkline/forkline/internal/control"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const watchdog = 10 * time.Second

// fakeCluster answers the control socket as its fields say and records
// the calls that change it.
type fakeCluster struct {
	status    control.Status
	reloadErr error
	release   chan struct{}      // if not nil, Reload waits for it
	events    chan control.Event // nil: Events fails

	mu    sync.Mutex
	calls []string
}

func (f *fakeCluster) record(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, fmt.Sprintf(format, args...))
}

func (f *fakeCluster) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

func (f *fakeCluster) Status(context.Context) (control.Status, error) { return f.status, nil }

func (f *fakeCluster) Reload(ctx context.Context) error {
	f.record("reload")
	if f.release != nil {
		select {
		case <-f.release:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return f.reloadErr
}

func (f *fakeCluster) Scale(n int) error { f.record("scale %d", n); return nil }

func (f *fakeCluster) Kill(id int, sig syscall.Signal) error {
	f.record("kill %d %d", id, int(sig))
	return nil
}

func (f *fakeCluster) Stop(context.Context) error { f.record("stop"); return nil }

func (f *fakeCluster) Events(context.Context) (<-chan control.Event, error) {
	if f.events == nil {
		return nil, errors.New("no events")
	}
	return f.events, nil
}

func (f *fakeCluster) Upgrade(context.Context) error {
	return fmt.Errorf("upgrade: %w", errors.ErrUnsupported)
}

var started = time.Now().Add(-3 * time.Hour)

func newCluster() *fakeCluster {
	return &fakeCluster{status: control.Status{PID: 4242, Started: started, Generation: 3, Workers: 4, ReloadsOK: 2, ReloadsFailed: 1,
		Slots: []control.Slot{
			{ID: 1, PID: 4250, Gen: 3, State: "listening", Eligible: true, Started: started.Add(time.Hour), Restarts: 0,
				RSS: 12 << 20, CPU: 1.54, Queue: 0, Backlog: 128, Requests: 10, RTT: 0.2},
			{ID: 2, PID: 4251, Gen: 3, State: "starting", Started: time.Now().Add(-42 * time.Second), Restarts: 3,
				RSS: -1, CPU: -1, Queue: -1, Backlog: -1, Requests: -1, RTT: -1},
		}}}
}

// serve serves h on a control socket in a new directory and returns its
// path; Serve ends with the test.
func serve(t *testing.T, h control.Handler) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "c.sock")
	ln, err := control.Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- control.Serve(ctx, ln, h, slog.New(slog.DiscardHandler)) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(watchdog):
			t.Error("Serve did not return")
		}
	})
	return path
}

// forkline runs the command in process.
func forkline(args ...string) (code int, stdout, stderr string) {
	var out, errs bytes.Buffer
	code = run(context.Background(), args, &out, &errs)
	return code, out.String(), errs.String()
}

func TestStatusTable(t *testing.T) {
	path := serve(t, newCluster())
	code, out, errs := forkline("status", "-socket", path)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 {
		t.Fatalf("output:\n%s", out)
	}
	for _, want := range []string{"parent pid 4242", "up 3h00m", "generation 3", "4 workers", "reloads 2 ok / 1 failed", "0 respawns"} {
		if !strings.Contains(lines[0], want) {
			t.Errorf("cluster line %q lacks %q", lines[0], want)
		}
	}
	rows := [][]string{
		{"ID", "PID", "GEN", "STATE", "UPTIME", "RESTARTS", "CPU", "RSS", "QUEUE"},
		{"1", "4250", "3", "listening", "2h00m", "0", "1.5s", "12.0M", "0/128"},
		{"2", "4251", "3", "starting", "42s", "3", "-", "-", "-"},
	}
	for i, want := range rows {
		if got := strings.Fields(lines[i+1]); !slices.Equal(got, want) {
			t.Errorf("row %d: %q, want %q", i, got, want)
		}
	}
	// The columns line up.
	if col := strings.Index(lines[1], "STATE"); strings.Index(lines[2], "listening") != col || strings.Index(lines[3], "starting") != col {
		t.Errorf("columns do not line up:\n%s", out)
	}
}

func TestStatusJSON(t *testing.T) {
	fc := newCluster()
	path := serve(t, fc)
	code, out, errs := forkline("-socket", path, "status", "-json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	var st control.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if st.PID != 4242 || len(st.Slots) != 2 || st.Slots[0].RSS != 12<<20 || !st.Started.Equal(started) {
		t.Errorf("status %+v", st)
	}
}

func TestReload(t *testing.T) {
	t.Run("serves", func(t *testing.T) {
		fc := newCluster()
		code, out, errs := forkline("reload", "-socket", serve(t, fc))
		if code != 0 || out != "reloaded: generation 3 serves\n" {
			t.Errorf("exit %d, %q, %q", code, out, errs)
		}
	})
	t.Run("fails", func(t *testing.T) {
		fc := newCluster()
		fc.reloadErr = errors.New("prefork: worker 2 (gen 4): listen tcp :8080: bind: permission denied")
		code, out, errs := forkline("reload", "-socket", serve(t, fc))
		if code != 1 || out != "" || errs != "forkline reload: failed: "+fc.reloadErr.Error()+"\n" {
			t.Errorf("exit %d, %q, %q", code, out, errs)
		}
	})
}

// On a terminal, a reload says it waits.
func TestReloadProgress(t *testing.T) {
	defer func(f func(io.Writer) time.Duration) { progressEvery = f }(progressEvery)
	progressEvery = func(io.Writer) time.Duration { return time.Millisecond }
	fc := newCluster()
	fc.release = make(chan struct{})
	path := serve(t, fc)
	pr, pw := io.Pipe()
	var out bytes.Buffer
	done := make(chan int, 1)
	go func() {
		done <- run(context.Background(), []string{"reload", "-socket", path}, &out, pw)
		pw.Close()
	}()
	r := bufio.NewReader(pr)
	var seen []byte
	for !bytes.Contains(seen, []byte("\rreloading… ")) {
		b, err := r.ReadByte()
		if err != nil {
			t.Fatalf("%v, after %q", err, seen)
		}
		seen = append(seen, b)
	}
	close(fc.release)
	rest, _ := io.ReadAll(r)
	if code := <-done; code != 0 || !strings.HasSuffix(string(rest), "\r\033[K") {
		t.Errorf("exit %d, stderr ends %q", code, rest)
	}
	if out.String() != "reloaded: generation 3 serves\n" {
		t.Errorf("stdout %q", out.String())
	}
}

func TestProgressOnlyOnTerminals(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if d := progressEvery(f); d != 0 {
		t.Errorf("to a file: every %v", d)
	}
	if d := progressEvery(&bytes.Buffer{}); d != 0 {
		t.Errorf("to a buffer: every %v", d)
	}
}

func TestScale(t *testing.T) {
	for _, tt := range []struct {
		args []string
		call string
		out  string
	}{
		{[]string{"+1"}, "scale 5", "workers: 5 (was 4)\n"},
		{[]string{"-1"}, "scale 3", "workers: 3 (was 4)\n"},
		{[]string{"7"}, "scale 7", "workers: 7 (was 4)\n"},
	} {
		t.Run(tt.args[0], func(t *testing.T) {
			fc := newCluster()
			path := serve(t, fc)
			code, out, errs := forkline(append([]string{"scale", "-socket", path}, tt.args...)...)
			if code != 0 || out != tt.out {
				t.Errorf("exit %d, %q, %q", code, out, errs)
			}
			if calls := fc.Calls(); !slices.Equal(calls, []string{tt.call}) {
				t.Errorf("calls %q, want %q", calls, tt.call)
			}
		})
	}
	t.Run("refused", func(t *testing.T) {
		fc := newCluster()
		path := serve(t, fc)
		for _, tt := range []struct {
			arg  string
			code int
			err  string
		}{{"x", 2, `"x" is not N, +K or -K`}, {"-4", 1, "would leave 0 workers"}, {"0", 1, "1 at least"}} {
			code, _, errs := forkline("scale", "-socket", path, tt.arg)
			if code != tt.code || !strings.Contains(errs, tt.err) {
				t.Errorf("scale %s: exit %d, %q; want %d, %q", tt.arg, code, errs, tt.code, tt.err)
			}
		}
		if calls := fc.Calls(); len(calls) > 0 {
			t.Errorf("calls %q", calls)
		}
	})
}

func TestKill(t *testing.T) {
	fc := newCluster()
	path := serve(t, fc)
	for _, tt := range []struct {
		args []string
		code int
		out  string
	}{
		{[]string{"2"}, 0, "sent TERM to worker 2\n"},
		{[]string{"2", "hup"}, 0, "sent HUP to worker 2\n"},
		{[]string{"1", "SIGKILL"}, 0, "sent SIGKILL to worker 1\n"},
		{[]string{"x"}, 2, ""},
		{[]string{"0"}, 2, ""},
		{[]string{"2", "FOO"}, 1, ""},
		{[]string{}, 2, ""},
		{[]string{"1", "2", "3"}, 2, ""},
	} {
		code, out, errs := forkline(append([]string{"kill", "-socket", path}, tt.args...)...)
		if code != tt.code || out != tt.out {
			t.Errorf("kill %q: exit %d, %q, %q; want %d, %q", tt.args, code, out, errs, tt.code, tt.out)
		}
	}
	if got, want := fc.Calls(), []string{"kill 2 15", "kill 2 1", "kill 1 9"}; !slices.Equal(got, want) {
		t.Errorf("calls %q, want %q", got, want)
	}
}

func TestStop(t *testing.T) {
	fc := newCluster()
	fc.events = make(chan control.Event)
	path := serve(t, fc)
	type result struct {
		code     int
		out, err string
	}
	done := make(chan result, 1)
	go func() {
		code, out, errs := forkline("stop", "-socket", path)
		done <- result{code, out, errs}
	}()
	fc.events <- control.Event{Type: "exit", ID: 1, PID: 4250, Asked: true, Reason: "stop"}
	fc.events <- control.Event{Type: "exit", ID: 2, PID: 4251, Asked: true, Reason: "stop"}
	close(fc.events) // the cluster has stopped
	r := <-done
	if r.code != 0 || !strings.HasPrefix(r.out, "stopped in ") {
		t.Errorf("exit %d, %q, %q", r.code, r.out, r.err)
	}
	if calls := fc.Calls(); !slices.Equal(calls, []string{"stop"}) {
		t.Errorf("calls %q", calls)
	}
}

func TestEvents(t *testing.T) {
	at := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	sent := []control.Event{
		{Time: at, Type: "exit", ID: 2, PID: 4251, Gen: 3, ExitCode: -1, Signal: "SIGKILL", Reason: "missed heartbeat", Err: "killed"},
		{Time: at, Type: "reloaded", Gen: 4},
	}
	for _, asJSON := range []bool{false, true} {
		fc := newCluster()
		fc.events = make(chan control.Event)
		args := []string{"events", "-socket", serve(t, fc)}
		if asJSON {
			args = append(args, "-json")
		}
		ctx, cancel := context.WithCancel(context.Background())
		pr, pw := io.Pipe()
		done := make(chan int, 1)
		go func() {
			var errs bytes.Buffer
			done <- run(ctx, args, pw, &errs)
			pw.Close()
		}()
		for _, ev := range sent {
			fc.events <- ev
		}
		r := bufio.NewReader(pr)
		var got []string
		for range sent {
			line, err := r.ReadString('\n')
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, strings.TrimSpace(line))
		}
		cancel() // ^C, once both were printed
		if rest, _ := io.ReadAll(r); len(rest) > 0 {
			t.Errorf("more output: %q", rest)
		}
		if code := <-done; code != 0 {
			t.Errorf("json %v: exit %d", asJSON, code)
		}
		for i, line := range got {
			if asJSON {
				var ev control.Event
				if err := json.Unmarshal([]byte(line), &ev); err != nil || !ev.Time.Equal(sent[i].Time) || ev.Type != sent[i].Type || ev.Reason != sent[i].Reason {
					t.Errorf("line %q: %+v, %v", line, ev, err)
				}
			} else if !strings.Contains(line, sent[i].Type) || !strings.Contains(line, fmt.Sprintf("gen=%d", sent[i].Gen)) {
				t.Errorf("line %q for %+v", line, sent[i])
			}
		}
		if !asJSON && !strings.Contains(got[0], `worker=2 pid=4251 gen=3 code=-1 signal=SIGKILL asked=false reason="missed heartbeat" err="killed"`) {
			t.Errorf("exit line %q", got[0])
		}
	}
}

func TestUsage(t *testing.T) {
	for _, tt := range []struct {
		args       []string
		code       int
		out, err   string // contained
		emptyOther bool
	}{
		{args: nil, code: 2, err: "usage: forkline"},
		{args: []string{"frob"}, code: 2, err: `forkline: unknown command "frob"`},
		{args: []string{"-h"}, code: 0, out: "usage: forkline"},
		{args: []string{"help"}, code: 0, out: "usage: forkline"},
		{args: []string{"-nope"}, code: 2, err: "flag provided but not defined: -nope"},
		{args: []string{"status", "-h"}, code: 0, err: "usage: forkline status [-json]"},
		{args: []string{"status", "extra"}, code: 2, err: "wrong number of arguments"},
		{args: []string{"reload", "-x"}, code: 2, err: "flag provided but not defined: -x"},
	} {
		code, out, errs := forkline(tt.args...)
		if code != tt.code || !strings.Contains(out, tt.out) || !strings.Contains(errs, tt.err) {
			t.Errorf("forkline %q: exit %d\nstdout %q\nstderr %q", tt.args, code, out, errs)
		}
	}
	_, out, _ := forkline("-h")
	for _, c := range commands {
		if !strings.Contains(out, "  "+c.name+" ") {
			t.Errorf("usage does not list %s:\n%s", c.name, out)
		}
	}
}

func TestSocketPath(t *testing.T) {
	t.Setenv("FORKLINE_SOCKET", "")
	t.Setenv("RUNTIME_DIRECTORY", "")
	code, _, errs := forkline("status")
	if code != 2 || errs != "forkline status: no control socket: pass -socket PATH\n" {
		t.Errorf("exit %d, %q", code, errs)
	}
	t.Setenv("RUNTIME_DIRECTORY", "/run/a:/run/b")
	if p, _ := socketPath(""); p != "/run/a/forkline.sock" {
		t.Errorf("from RUNTIME_DIRECTORY: %q", p)
	}
	path := serve(t, newCluster())
	t.Setenv("FORKLINE_SOCKET", path)
	if code, _, errs := forkline("status"); code != 0 {
		t.Errorf("from FORKLINE_SOCKET: exit %d, %q", code, errs)
	}
	if p, _ := socketPath("/x.sock"); p != "/x.sock" {
		t.Errorf("from the flag: %q", p)
	}
}

func TestUnreachable(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, "stale.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	missing := filepath.Join(dir, "none.sock")
	for path, cause := range map[string]string{stale: "connection refused", missing: "no such file or directory"} {
		code, _, errs := forkline("status", "-socket", path)
		want := "forkline status: cannot reach the control socket at " + path + ": " + cause + " — is the cluster running with a control socket?\n"
		if code != 1 || errs != want {
			t.Errorf("exit %d, %q; want %q", code, errs, want)
		}
	}
}
