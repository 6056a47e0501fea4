package prefork_test

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/forkline/forkline/prefork"
)

// A helper cluster is this test binary run as a helper program (see
// registerHelper) whose parent is a prefork parent, in a process group of
// its own. The test learns what happens in it from typed observations that
// the helper's parent writes on a pipe, one JSON line each: every
// prefork.Event (OnEvent), and what the helper reports of its own (the
// result of a Cluster.Reload call, its goroutine count, Run's return). It
// waits on them with a reader (feed_linux_test.go): readiness, reloads and
// exits are events, never log lines. The cluster's stderr (the JSON logs of
// the parent and of every worker) is kept too, shown when the test fails,
// and read only by tests about a log line.
//
// The pipe. The test passes the pipe's write end to the helper as
// descriptor obsFD, 9 (os/exec's ExtraFiles, with nil entries for 3 to 8,
// which the helper gets closed), and names it in envObs. Not 3 or 4: those
// are the numbers a forkline parent gives each worker for its channel and
// its crash pipe (internal/wire/bootstrap.go), and a process that has the
// worker variables reads them (one started by hand checks them, and takes
// a pipe at 4 for its crash output). The helper's parent marks the pipe
// close-on-exec first thing (openObserver), before it starts a worker:
// os/exec clears that flag on what it passes, and a worker, or a process a
// worker starts, that held the pipe would keep the test from seeing EOF
// when the parent exits. Only the parent writes (prefork.IsWorker): in a
// worker, descriptor 9 may be one of its own sockets.
const (
	envObs = "FORKLINE_TEST_OBS"
	obsFD  = 9
)

// Kinds of observation.
const (
	kindEvent      = "event"       // a prefork.Event of the parent
	kindStart      = "start"       // the helper's parent runs; PID is its own pid
	kindRun        = "run"         // Run returned; Err is what it returned
	kindReloadCall = "reload-call" // the helper calls Cluster.Reload (SIGWINCH; SIGUSR2 is the upgrade)
	kindReload     = "reload"      // a Cluster.Reload call returned Err
	kindReport     = "report"      // on SIGUSR1: N goroutines, and Cluster.Workers
)

// An observation is one line on the observation pipe.
type observation struct {
	Kind string `json:"kind"`

	// Kind "event": the prefork.Event, its Err as text.
	Type     prefork.EventType `json:"type,omitempty"`
	Worker   workerObs         `json:"worker,omitzero"`
	Addr     string            `json:"addr,omitempty"`
	ExitCode int               `json:"exit_code,omitempty"`
	Signal   syscall.Signal    `json:"signal,omitempty"`
	Asked    bool              `json:"asked,omitempty"`
	Reason   string            `json:"reason,omitempty"`
	Gen      int               `json:"gen,omitempty"`
	Err      string            `json:"err,omitempty"` // also kindRun's and kindReload's result

	PID     int         `json:"pid,omitempty"`     // kindStart
	N       int         `json:"n,omitempty"`       // kindReport: runtime.NumGoroutine
	Workers []workerObs `json:"workers,omitempty"` // kindReport: Cluster.Workers
}

// workerObs is a prefork.WorkerInfo, its State as text.
type workerObs struct {
	ID, PID, Gen int
	State        string
	Restarts     int
}

func workerObsOf(w prefork.WorkerInfo) workerObs {
	return workerObs{ID: w.ID, PID: w.PID, Gen: w.Gen, State: w.State.String(), Restarts: w.Restarts}
}

func eventObs(ev prefork.Event) observation {
	o := observation{Kind: kindEvent, Type: ev.Type, Addr: ev.Addr,
		ExitCode: ev.ExitCode, Asked: ev.Asked, Reason: ev.Reason, Gen: ev.Gen, Err: errText(ev.Err)}
	if ev.Worker.ID != 0 { // a worker's event, not the cluster's
		o.Worker = workerObsOf(ev.Worker)
	}
	if sig, ok := ev.Signal.(syscall.Signal); ok {
		o.Signal = sig
	}
	return o
}

// is reports whether o is an event of type t.
func (o observation) is(t prefork.EventType) bool { return o.Kind == kindEvent && o.Type == t }

// cleanExit reports whether an exit event says the process exited 0.
func (o observation) cleanExit() bool { return o.ExitCode == 0 && o.Signal == 0 }

func (o observation) String() string {
	b, _ := json.Marshal(o)
	return string(b)
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// observer is the helper parent's end of the pipe. It is nil in a worker
// and in a helper run without a pipe; a nil observer writes nothing.
type observer struct {
	mu  sync.Mutex
	enc *json.Encoder
}

// openObserver takes the pipe; call it first thing in a helper, before the
// cluster starts a worker.
func openObserver() *observer {
	if prefork.IsWorker() || os.Getenv(envObs) != strconv.Itoa(obsFD) {
		return nil
	}
	// The pipe is close-on-exec (workers must not inherit it): a parent
	// that an upgrade executed again has none, and the descriptor may be
	// one of the sockets the upgrade carried. Only a pipe is ours.
	var st syscall.Stat_t
	if syscall.Fstat(obsFD, &st) != nil || st.Mode&syscall.S_IFMT != syscall.S_IFIFO {
		return nil
	}
	syscall.CloseOnExec(obsFD)
	o := &observer{enc: json.NewEncoder(os.NewFile(obsFD, "observations"))}
	o.write(observation{Kind: kindStart, PID: os.Getpid()})
	return o
}

// write writes one observation. A test that stopped reading does not stop
// the helper: the write fails (EPIPE) and is forgotten.
func (o *observer) write(ob observation) {
	if o == nil {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.enc.Encode(ob)
}

func (o *observer) event(ev prefork.Event) { o.write(eventObs(ev)) }

// helperSpec says how to start a helper cluster.
type helperSpec struct {
	helper string     // the helper program; "hello" if empty
	env    []string   // added to the test's environment
	unset  []string   // variables of the test's environment left out
	wrap   []string   // a command the helper runs under (unshare ...), if any
	files  []*os.File // descriptors 3, 4, ... of the helper (socket activation)
	exe    string     // the test binary to run, if not os.Executable() (a copy another user may run)
}

// testCluster is a running helper cluster.
type testCluster struct {
	t    *testing.T
	cmd  *exec.Cmd
	pid  int                // the helper parent: cmd's process, or its child under wrap
	obs  *feed[observation] // from the pipe
	logs *feed[string]      // stderr, line by line
	r    *reader[observation]
	lr   *reader[string]

	exited  chan struct{}
	exitErr error
}

// startCluster starts the "hello" helper with args.
func startCluster(t *testing.T, args ...string) *testCluster {
	t.Helper()
	return startHelper(t, helperSpec{}, args...)
}

// startHelper starts a helper cluster. It is killed, with its process
// group, when the test ends.
func startHelper(t *testing.T, spec helperSpec, args ...string) *testCluster {
	t.Helper()
	if spec.helper == "" {
		spec.helper = "hello"
	}
	exe := spec.exe
	if exe == "" {
		var err error
		if exe, err = os.Executable(); err != nil {
			t.Fatal(err)
		}
	}
	obsR, obsW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	argv := append(append(slices.Clone(spec.wrap), exe), args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); !slices.Contains(spec.unset, name) {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, append(spec.env, useHelper(spec.helper), envObs+"="+strconv.Itoa(obsFD))...)
	cmd.Stderr = errW
	cmd.ExtraFiles = make([]*os.File, obsFD-2) // 3 .. obsFD-1 closed
	cmd.ExtraFiles[obsFD-3] = obsW
	copy(cmd.ExtraFiles, spec.files)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	err = cmd.Start()
	obsW.Close()
	errW.Close()
	if err != nil {
		obsR.Close()
		errR.Close()
		t.Fatal(err)
	}
	c := &testCluster{t: t, cmd: cmd, pid: cmd.Process.Pid, obs: newFeed[observation](), logs: newFeed[string](), exited: make(chan struct{})}
	c.r, c.lr = c.obs.reader(), c.logs.reader()
	go readLines(obsR, func(line string) {
		var o observation
		if err := json.Unmarshal([]byte(line), &o); err != nil {
			o = observation{Kind: "malformed", Err: line}
		}
		c.obs.add(o)
	}, c.obs.end)
	go readLines(errR, c.logs.add, c.logs.end)
	go func() {
		c.exitErr = cmd.Wait()
		close(c.exited)
	}()
	t.Cleanup(c.cleanup)
	return c
}

// readLines hands each line of r to add, then closes r and calls end.
func readLines(r io.ReadCloser, add func(string), end func()) {
	defer end()
	defer r.Close()
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 4<<20) // a log record may carry a stack
	for sc.Scan() {
		add(sc.Text())
	}
}

// cleanup kills what is left of the cluster and waits for its output to
// end; a failed test shows that output.
func (c *testCluster) cleanup() {
	syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
	// The workers have process groups of their own: they go when their
	// parent does, within a second, and their stderr with them.
	if err := c.gone(10 * time.Second); err != nil {
		c.t.Errorf("helper cluster %d did not go away: %v", c.pid, err)
	}
	if c.t.Failed() {
		c.t.Logf("cluster output:\n%s", c.output())
	}
}

// gone waits until the parent has exited and both its pipes have ended.
func (c *testCluster) gone(timeout time.Duration) error {
	watchdog := time.NewTimer(timeout)
	defer watchdog.Stop()
	select {
	case <-c.exited:
	case <-watchdog.C:
		return errors.New("the process is still running")
	}
	if err := c.obs.waitEnd(timeout); err != nil {
		return fmt.Errorf("observations: %w", err)
	}
	if err := c.logs.waitEnd(timeout); err != nil {
		return fmt.Errorf("stderr: %w", err)
	}
	return nil
}

// output is everything the cluster wrote to stderr.
func (c *testCluster) output() string { return strings.Join(c.logs.all(), "\n") }

// await returns the next observation that match accepts (see reader.await).
func (c *testCluster) await(timeout time.Duration, what string, match func(observation) bool) observation {
	c.t.Helper()
	return c.r.await(c.t, timeout, what, match)
}

// awaitEvent returns the next event of type typ that match (if not nil)
// accepts.
func (c *testCluster) awaitEvent(timeout time.Duration, what string, typ prefork.EventType, match func(observation) bool) observation {
	c.t.Helper()
	return c.await(timeout, what, func(o observation) bool { return o.is(typ) && (match == nil || match(o)) })
}

// awaitKind returns the next observation of the helper's own kind.
func (c *testCluster) awaitKind(timeout time.Duration, kind string) observation {
	c.t.Helper()
	return c.await(timeout, kind+" observation", func(o observation) bool { return o.Kind == kind })
}

// ready waits for the cluster's EventReady and returns its address and the
// pid of each worker that served by then, by id.
func (c *testCluster) ready() (addr string, pids map[int]int) {
	c.t.Helper()
	pids = make(map[int]int)
	o := c.await(20*time.Second, "the cluster ready", func(o observation) bool {
		if o.is(prefork.EventListening) {
			pids[o.Worker.ID] = o.Worker.PID
		}
		return o.is(prefork.EventReady)
	})
	return o.Addr, pids
}

// report asks the helper's parent for its goroutine count and workers.
func (c *testCluster) report() observation {
	c.t.Helper()
	c.signal(syscall.SIGUSR1)
	return c.awaitKind(10*time.Second, kindReport)
}

// signal sends sig to the parent.
func (c *testCluster) signal(sig syscall.Signal) {
	c.t.Helper()
	if err := syscall.Kill(c.pid, sig); err != nil {
		c.t.Fatalf("kill -%v %d: %v", sig, c.pid, err)
	}
}

// stopAndCheck stops the cluster with SIGTERM and checks that it exits 0
// (a data race found in the parent by the race detector would make it 66).
func (c *testCluster) stopAndCheck() {
	c.t.Helper()
	c.signal(syscall.SIGTERM)
	if code := c.wait(20 * time.Second); code != 0 {
		c.t.Errorf("parent exit code %d, want 0", code)
	}
}

// wait waits for the process the test started to exit and returns its exit
// code.
func (c *testCluster) wait(timeout time.Duration) int {
	c.t.Helper()
	watchdog := time.NewTimer(timeout)
	defer watchdog.Stop()
	select {
	case <-c.exited:
	case <-watchdog.C:
		c.t.Fatalf("parent still running after %v", timeout)
	}
	var ee *exec.ExitError
	if errors.As(c.exitErr, &ee) {
		return ee.ExitCode()
	}
	if c.exitErr != nil {
		c.t.Fatal(c.exitErr)
	}
	return 0
}

// waitGone waits for the parent's exit and the end of its output (every
// worker holds its stderr), and checks that no process of its group is left.
func (c *testCluster) waitGone(timeout time.Duration) {
	c.t.Helper()
	if err := c.gone(timeout); err != nil {
		c.t.Fatal(err)
	}
	if !errors.Is(syscall.Kill(-c.cmd.Process.Pid, 0), syscall.ESRCH) {
		c.t.Error("processes left in the cluster's process group after it exited")
	}
}

// A logRecord is one JSON log line of a helper cluster (slog's JSON
// handler), for the tests about a log line.
type logRecord map[string]any

func (r logRecord) str(key string) string {
	s, _ := r[key].(string)
	return s
}

func (r logRecord) num(key string) int {
	f, _ := r[key].(float64)
	return int(f)
}

// awaitLog returns the next JSON log record that match accepts.
func (c *testCluster) awaitLog(timeout time.Duration, what string, match func(logRecord) bool) logRecord {
	c.t.Helper()
	var rec logRecord
	c.lr.await(c.t, timeout, what+" log record", func(line string) bool {
		rec = nil
		return json.Unmarshal([]byte(line), &rec) == nil && match(rec)
	})
	return rec
}

// logged returns every JSON log record so far that match accepts.
func (c *testCluster) logged(match func(logRecord) bool) []logRecord {
	return parseLog(c.logs.all(), match)
}

// parseLog returns the JSON log records among lines that match accepts.
func parseLog(lines []string, match func(logRecord) bool) []logRecord {
	var recs []logRecord
	for _, line := range lines {
		var rec logRecord
		if json.Unmarshal([]byte(line), &rec) == nil && match(rec) {
			recs = append(recs, rec)
		}
	}
	return recs
}
