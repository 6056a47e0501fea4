package prefork_test

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/forkline/forkline/internal/control"
	"github.com/forkline/forkline/prefork"
)

// forklineCmd builds cmd/forkline once for the tests that drive a cluster
// with it.
var forklineCmd = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "forkline-cmd-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "forkline")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Dir = filepath.Join("..", "cmd", "forkline") // a module of its own (it serves metrics)
	out, err := build.CombinedOutput()
	if err != nil {
		return "", &exec.Error{Name: "go build: " + string(out), Err: err}
	}
	return bin, nil
})

// forkline runs the forkline command on sock and returns its output and
// exit status.
func forkline(t *testing.T, sock string, args ...string) (string, int) {
	t.Helper()
	bin, err := forklineCmd()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{args[0], "-socket", sock}, args[1:]...)...)
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("forkline %v: %v", args, err)
	}
	return string(out), code
}

// TestControlSocket drives a running cluster through its control socket
// with the forkline command: status, scale, kill, reload (its outcome and
// exit status), events, and stop; a client that connects and says nothing
// holds nothing up, and garbage gets an error line.
func TestControlSocket(t *testing.T) {
	t.Parallel()
	sock := filepath.Join(t.TempDir(), "ctl.sock")
	c := startCluster(t, "-workers", "2", "-control", sock, "-fail-from-gen", "3")
	_, pids := c.ready()
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("control socket: %v, %v", fi, err)
	}

	// A client that connects and sends nothing.
	idle, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()

	out, code := forkline(t, sock, "status")
	if code != 0 || !strings.Contains(out, "ID") || !strings.Contains(out, "QUEUE") {
		t.Fatalf("status (exit %d):\n%s", code, out)
	}
	for _, pid := range pids {
		if !strings.Contains(out, " "+strconv.Itoa(pid)+" ") {
			t.Errorf("status does not show worker pid %d:\n%s", pid, out)
		}
	}

	// Garbage: an error line, the cluster unchanged.
	g, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	g.Write([]byte("{not json\n"))
	var ans struct {
		OK    bool   `json:"ok"`
		Error string `json:"error"`
	}
	g.SetReadDeadline(time.Now().Add(10 * time.Second))
	if err := json.NewDecoder(g).Decode(&ans); err != nil || ans.OK || ans.Error == "" {
		t.Errorf("garbage answered %+v, %v", ans, err)
	}
	g.Close()

	// A stream of events, while the rest goes on.
	cl, err := control.Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	events := make(chan control.Event, 1024)
	go func() {
		defer close(events)
		cl.Events(context.Background(), func(ev control.Event) { events <- ev })
	}()
	defer cl.Close()

	if out, code := forkline(t, sock, "scale", "+1"); code != 0 {
		t.Fatalf("scale +1 (exit %d): %s", code, out)
	}
	c.awaitEvent(20*time.Second, "worker 3 listening", prefork.EventListening, func(o observation) bool { return o.Worker.ID == 3 })

	if out, code := forkline(t, sock, "kill", "1", "KILL"); code != 0 {
		t.Fatalf("kill (exit %d): %s", code, out)
	}
	c.awaitEvent(20*time.Second, "worker 1 replaced", prefork.EventListening, func(o observation) bool {
		return o.Worker.ID == 1 && o.Worker.PID != pids[1]
	})

	if out, code := forkline(t, sock, "reload"); code != 0 {
		t.Errorf("a reload that serves (exit %d): %s", code, out)
	}
	if out, code := forkline(t, sock, "reload"); code != 1 || !strings.Contains(out, "fail") {
		t.Errorf("a reload that fails: exit %d: %s", code, out)
	}
	out, _ = forkline(t, sock, "status", "-json")
	var st control.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status -json: %v\n%s", err, out)
	}
	if st.Generation != 2 || st.Workers != 3 || st.ReloadsOK != 1 || st.ReloadsFailed != 1 || st.Respawns != 1 {
		t.Errorf("status after scale, kill and two reloads: %+v", st)
	}

	if out, code := forkline(t, sock, "stop"); code != 0 || !strings.Contains(out, "stopped") {
		t.Errorf("stop (exit %d): %s", code, out)
	}
	if code := c.wait(30 * time.Second); code != 0 {
		t.Errorf("the parent exited %d", code)
	}
	seen := map[string]bool{}
	for ev := range events { // closed at the cluster's end
		seen[ev.Type] = true
	}
	for _, typ := range []string{"fork", "listening", "exit", "reloading", "reloaded", "stopping"} {
		if !seen[typ] {
			t.Errorf("the event stream had no %q event (it had %v)", typ, seen)
		}
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("the control socket is still there after the stop: %v", err)
	}
}
