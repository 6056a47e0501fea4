package metrics_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/forkline/forkline/metrics"
	"github.com/forkline/forkline/prefork"
)

// The tests run one cluster each, one after the other: a parent sets the
// test process's GOMAXPROCS to 1 while it runs, so parents side by side
// would fight over it.

// eventWait bounds every wait for an event: a watchdog that fails the test.
const eventWait = 30 * time.Second

// cluster is a 2-worker cluster whose parent runs in the test process,
// with the collector in a pedantic registry (which checks that what
// Collect sends matches what Describe lists).
type cluster struct {
	c      *prefork.Cluster
	addr   string
	col    prometheus.Collector
	reg    *prometheus.Registry
	events *eventLog
	log    *syncBuffer

	done     chan error
	stopOnce sync.Once
}

func startCluster(t *testing.T) *cluster {
	t.Helper()
	cl := &cluster{events: newEventLog(), log: &syncBuffer{}, done: make(chan error, 1), reg: prometheus.NewPedanticRegistry()}
	cfg := workerConfig()
	cfg.Workers = 2
	// Steering off: the kernel keeps giving a stopped worker's socket its
	// share of connections, for the queue to fill.
	cfg.Steering = prefork.SteerOff
	cfg.OnEvent = cl.events.add
	cfg.Logger = slog.New(slog.NewTextHandler(cl.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cl.c = prefork.New(cfg)
	cl.col = metrics.NewCollector(cl.c)
	cl.reg.MustRegister(cl.col)
	go func() { cl.done <- cl.c.Run(http.NotFoundHandler()) }() // the parent does not serve; its workers do
	t.Cleanup(func() {
		cl.stop(t)
		if t.Failed() {
			t.Logf("parent's log:\n%s", cl.log)
		}
	})
	cl.addr = cl.events.await(t, "the cluster ready", func(ev prefork.Event) bool { return ev.Type == prefork.EventReady }).Addr
	return cl
}

// stop shuts the cluster down and checks that Run returned; it can be
// called more than once.
func (cl *cluster) stop(t *testing.T) {
	cl.stopOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := cl.c.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		select {
		case err := <-cl.done:
			if !errors.Is(err, prefork.ErrServerClosed) {
				t.Errorf("Run returned %v, want ErrServerClosed", err)
			}
		case <-ctx.Done():
			t.Error("Run did not return")
		}
	})
}

// scrape gathers the registry: metric families by name.
func (cl *cluster) scrape(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	fams, err := cl.reg.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	byName := map[string]*dto.MetricFamily{}
	for _, f := range fams {
		byName[f.GetName()] = f
	}
	return byName
}

// value returns the value of the series of family name whose labels are
// labels (name, value pairs), and whether there is one.
func value(fams map[string]*dto.MetricFamily, name string, labels ...string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
	want := map[string]string{}
	for i := 0; i+1 < len(labels); i += 2 {
		want[labels[i]] = labels[i+1]
	}
	for _, m := range f.GetMetric() {
		if len(m.GetLabel()) != len(want) {
			continue
		}
		match := true
		for _, l := range m.GetLabel() {
			match = match && want[l.GetName()] == l.GetValue()
		}
		if !match {
			continue
		}
		switch f.GetType() {
		case dto.MetricType_COUNTER:
			return m.GetCounter().GetValue(), true
		case dto.MetricType_GAUGE:
			return m.GetGauge().GetValue(), true
		}
	}
	return 0, false
}

// mustValue is value, failing the test when the series is missing.
func mustValue(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	t.Helper()
	v, ok := value(fams, name, labels...)
	if !ok {
		t.Fatalf("no series %s%q", name, labels)
	}
	return v
}

// sum adds up the series of family name.
func sum(fams map[string]*dto.MetricFamily, name string) float64 {
	var total float64
	for _, m := range fams[name].GetMetric() {
		total += m.GetCounter().GetValue() + m.GetGauge().GetValue()
	}
	return total
}

// TestCollector: a running cluster's metrics pass promlint, match
// Describe, and say what the cluster is: 2 listening workers in 2 slots,
// generation 1; the handler serves them with the parent's own.
func TestCollector(t *testing.T) {
	cl := startCluster(t)
	problems, err := testutil.CollectAndLint(cl.col)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}

	fams := cl.scrape(t)
	for _, s := range []string{"starting", "online", "listening", "draining", "disconnected"} {
		want := 0.0
		if s == "listening" {
			want = 2
		}
		if got := mustValue(t, fams, "forkline_workers", "state", s); got != want {
			t.Errorf(`forkline_workers{state=%q} = %v, want %v`, s, got, want)
		}
	}
	for name, want := range map[string]float64{"forkline_slots": 2, "forkline_generation": 1,
		"forkline_messages_relayed_total": 0, "forkline_messages_dropped_total": 0} {
		if got := mustValue(t, fams, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	for _, result := range []string{"ok", "failed"} {
		if got := mustValue(t, fams, "forkline_reloads_total", "result", result); got != 0 {
			t.Errorf("forkline_reloads_total{result=%q} = %v, want 0", result, got)
		}
	}
	for _, id := range []string{"1", "2"} {
		if got := mustValue(t, fams, "forkline_worker_restarts_total", "worker", id); got != 0 {
			t.Errorf("worker %s: %v restarts", id, got)
		}
		if got := mustValue(t, fams, "forkline_worker_resident_memory_bytes", "worker", id); got <= 0 {
			t.Errorf("worker %s: resident memory %v", id, got)
		}
		if got := mustValue(t, fams, "forkline_worker_eligible", "worker", id); got != 1 {
			t.Errorf("worker %s: eligible %v", id, got)
		}
		if got := mustValue(t, fams, "forkline_worker_listen_queue", "worker", id); got != 0 {
			t.Errorf("worker %s: listen queue %v", id, got)
		}
		if got := mustValue(t, fams, "forkline_worker_listen_queue_limit", "worker", id); got <= 0 {
			t.Errorf("worker %s: listen queue limit %v", id, got)
		}
		mustValue(t, fams, "forkline_worker_cpu_seconds_total", "worker", id)
		mustValue(t, fams, "forkline_worker_requests_total", "worker", id)
	}
	if n := len(fams["forkline_worker_requests_total"].GetMetric()); n != 2 {
		t.Errorf("%d series of forkline_worker_requests_total, want one per slot", n)
	}

	srv := httptest.NewServer(metrics.Handler(cl.c))
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s, %v\n%s", srv.URL, resp.Status, err, body)
	}
	for _, line := range []string{`forkline_workers{state="listening"} 2`, `forkline_worker_restarts_total{worker="2"} 0`, "go_goroutines ", "process_resident_memory_bytes "} {
		if !bytes.Contains(body, []byte("\n"+line)) {
			t.Errorf("the handler's answer has no line %q:\n%s", line, body)
		}
	}
}

// TestCollectorNotRunning: before the cluster runs and after it stopped,
// there is nothing to report, and a scrape does not fail.
func TestCollectorNotRunning(t *testing.T) {
	if n := testutil.CollectAndCount(metrics.NewCollector(prefork.New(workerConfig()))); n != 0 {
		t.Errorf("a cluster not started: %d metrics", n)
	}
	cl := startCluster(t)
	if n := testutil.CollectAndCount(cl.col); n == 0 {
		t.Fatal("a running cluster: no metrics")
	}
	cl.stop(t)
	if n := testutil.CollectAndCount(cl.col); n != 0 {
		t.Errorf("a stopped cluster: %d metrics", n)
	}
	if _, err := cl.reg.Gather(); err != nil {
		t.Errorf("Gather after the stop: %v", err)
	}
}

// TestCollectorMoves: the metrics follow what happens to the cluster:
// requests, a worker killed and replaced, a reload, a stopped worker whose
// connections wait in its queue.
func TestCollectorMoves(t *testing.T) {
	cl := startCluster(t)
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	const n = 30
	for range n {
		resp, err := client.Get("http://" + cl.addr + "/")
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || !strings.HasPrefix(string(body), "Hello from worker=") {
			t.Fatalf("GET: %q, %v", body, err)
		}
	}
	fams := cl.scrape(t)
	if got := sum(fams, "forkline_worker_requests_total"); got != n {
		t.Errorf("after %d requests forkline_worker_requests_total sums to %v", n, got)
	}

	// A worker killed: its replacement is counted in its slot, and the
	// slot's counters carry over.
	old := slotPID(t, cl, 1)
	cpuBefore := mustValue(t, fams, "forkline_worker_cpu_seconds_total", "worker", "1")
	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cl.events.await(t, "slot 1's replacement listening", func(ev prefork.Event) bool {
		return ev.Type == prefork.EventListening && ev.Worker.ID == 1 && ev.Worker.PID != old
	})
	fams = cl.scrape(t)
	for id, want := range map[string]float64{"1": 1, "2": 0} {
		if got := mustValue(t, fams, "forkline_worker_restarts_total", "worker", id); got != want {
			t.Errorf(`after a SIGKILL of slot 1's worker forkline_worker_restarts_total{worker=%q} = %v, want %v`, id, got, want)
		}
	}
	if got := sum(fams, "forkline_worker_requests_total"); got != n {
		t.Errorf("after the crash forkline_worker_requests_total sums to %v, want %d", got, n)
	}
	if got := mustValue(t, fams, "forkline_worker_cpu_seconds_total", "worker", "1"); got < cpuBefore {
		t.Errorf("slot 1's CPU time went back from %v to %v", cpuBefore, got)
	}
	mustValue(t, fams, "forkline_worker_resident_memory_bytes", "worker", "1") // the replacement's

	// A reload.
	ctx, cancel := context.WithTimeout(context.Background(), eventWait)
	defer cancel()
	if err := cl.c.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	fams = cl.scrape(t)
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"forkline_reloads_total", []string{"result", "ok"}, 1},
		{"forkline_reloads_total", []string{"result", "failed"}, 0},
		{"forkline_generation", nil, 2},
	} {
		if got := mustValue(t, fams, c.name, c.labels...); got != c.want {
			t.Errorf("after a reload %s%q = %v, want %v", c.name, c.labels, got, c.want)
		}
	}

	// A stopped worker: the connections the kernel gives its socket wait
	// in the slot's queue.
	stopped := slotPID(t, cl, 2)
	if err := syscall.Kill(stopped, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer syscall.Kill(stopped, syscall.SIGCONT) // the test may fail first
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	queue := func() float64 { return mustValue(t, cl.scrape(t), "forkline_worker_listen_queue", "worker", "2") }
	for q := queue(); q < 3; q = queue() {
		if len(conns) == 200 {
			t.Fatalf("200 connections, and forkline_worker_listen_queue{worker=\"2\"} says %v", q)
		}
		c, err := net.Dial("tcp", cl.addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	if err := syscall.Kill(stopped, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	t.Logf("slot 2's queue reached 3 after %d connections", len(conns))
}

// slotPID returns the pid of slot id's serving worker, from Stats.
func slotPID(t *testing.T, cl *cluster, id int) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := cl.c.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, sl := range st.Slots {
		if sl.ID == id && sl.PID != 0 {
			return sl.PID
		}
	}
	t.Fatalf("no serving worker in slot %d: %+v", id, st.Slots)
	return 0
}

// eventLog keeps the cluster's events for one reader (the test), which
// waits for the next one that matches. OnEvent must not block the parent:
// add only appends.
type eventLog struct {
	mu      sync.Mutex
	evs     []prefork.Event
	next    int           // the next event await looks at
	changed chan struct{} // poked by add; capacity 1
}

func newEventLog() *eventLog { return &eventLog{changed: make(chan struct{}, 1)} }

func (l *eventLog) add(ev prefork.Event) {
	l.mu.Lock()
	l.evs = append(l.evs, ev)
	l.mu.Unlock()
	select {
	case l.changed <- struct{}{}:
	default:
	}
}

// await returns the next event that match accepts, or fails the test
// after eventWait.
func (l *eventLog) await(t *testing.T, what string, match func(prefork.Event) bool) prefork.Event {
	t.Helper()
	watchdog := time.NewTimer(eventWait)
	defer watchdog.Stop()
	for {
		l.mu.Lock()
		for l.next < len(l.evs) {
			ev := l.evs[l.next]
			l.next++
			if match(ev) {
				l.mu.Unlock()
				return ev
			}
		}
		l.mu.Unlock()
		select {
		case <-l.changed:
		case <-watchdog.C:
			t.Fatalf("no event %s within %v", what, eventWait)
		}
	}
}

// syncBuffer is a bytes.Buffer for the parent's log, written from its
// goroutines and read by the test.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
