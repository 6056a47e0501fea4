package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/forkline/forkline/internal/exampletest"
)

// TestMetricsFromTheParent runs the example and scrapes /metrics: the
// parent answers, on a socket that it holds and its workers do not, with
// the whole cluster's metrics; a worker killed shows in its slot's restart
// counter.
func TestMetricsFromTheParent(t *testing.T) {
	c := exampletest.Start(t, exampletest.Build(t), "-v", "-metrics-addr", "127.0.0.1:0")
	metricsAddr := c.WaitLog(t, `msg="serving metrics" addr=(\S+)`)[1]
	workers := map[string]int{} // pid by slot
	for range 2 {
		m := c.WaitLog(t, `msg=listening worker=(\d+) pid=(\d+)`)
		workers[m[1]], _ = strconv.Atoi(m[2])
	}
	c.WaitLog(t, `msg="cluster ready"`)
	parent := c.Cmd.Process.Pid

	fams := scrape(t, metricsAddr)
	if got := sample(t, fams, "forkline_workers", "state", "listening"); got != 2 {
		t.Errorf(`forkline_workers{state="listening"} = %v, want 2`, got)
	}
	if got := sample(t, fams, "forkline_worker_restarts_total", "worker", "1"); got != 0 {
		t.Errorf(`forkline_worker_restarts_total{worker="1"} = %v, want 0`, got)
	}

	// The metrics socket is the parent's alone.
	inode := listeningInode(t, metricsAddr)
	if !holds(t, parent, inode) {
		t.Errorf("the parent (pid %d) does not hold the metrics socket (inode %d)", parent, inode)
	}
	for id, pid := range workers {
		if holds(t, pid, inode) {
			t.Errorf("worker %s (pid %d) holds the metrics socket", id, pid)
		}
	}

	// A worker killed, and replaced.
	if err := syscall.Kill(workers["1"], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	c.WaitLog(t, `msg=listening worker=1 pid=`)
	fams = scrape(t, metricsAddr)
	if got := sample(t, fams, "forkline_worker_restarts_total", "worker", "1"); got != 1 {
		t.Errorf(`after a SIGKILL forkline_worker_restarts_total{worker="1"} = %v, want 1`, got)
	}
	if got := sample(t, fams, "forkline_workers", "state", "listening"); got != 2 {
		t.Errorf(`after a SIGKILL forkline_workers{state="listening"} = %v, want 2`, got)
	}
	c.Stop(t)
}

// scrape gets /metrics from addr and parses it.
func scrape(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	resp, err := client.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	return fams
}

// sample is the value of family name's series with the one label given.
func sample(t *testing.T, fams map[string]*dto.MetricFamily, name, label, value string) float64 {
	t.Helper()
	for _, m := range fams[name].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == label && l.GetValue() == value {
				return m.GetCounter().GetValue() + m.GetGauge().GetValue()
			}
		}
	}
	t.Fatalf("no series %s{%s=%q}", name, label, value)
	return 0
}

// listeningInode returns the inode of the IPv4 TCP socket listening on
// addr, from /proc/net/tcp.
func listeningInode(t *testing.T, addr string) uint64 {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := strconv.Atoi(port)
	data, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	local := fmt.Sprintf("0100007F:%04X", p) // 127.0.0.1, as the kernel writes it
	for _, line := range strings.Split(string(data), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) > 9 && f[1] == local && f[3] == "0A" { // 0A: LISTEN
			inode, err := strconv.ParseUint(f[9], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return inode
		}
	}
	t.Fatalf("no socket listening on %s in /proc/net/tcp", addr)
	return 0
}

// holds reports whether process pid has a descriptor for socket inode.
func holds(t *testing.T, pid int, inode uint64) bool {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	fds, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("socket:[%d]", inode)
	for _, fd := range fds {
		if target, err := os.Readlink(filepath.Join(dir, fd.Name())); err == nil && target == want {
			return true
		}
	}
	return false
}
