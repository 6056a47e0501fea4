package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/forkline/forkline/bench/internal/harness"
)

// sample is one measured run of one peer.
type sample struct {
	wrk        harness.WrkResult
	parentMS   float64 // the parent's CPU time over the run
	wallMS     float64
	serversMS  float64 // the workers' (or the one process's) CPU time
	csw        float64 // their threads' context switches, voluntary and involuntary
	rssParent  float64 // kB, right after the run
	rssWorkers []float64
	conns      []float64 // established connections per worker, 1 s into the run
	other      float64   // % of all CPUs that other processes took during the run
}

// running is a started peer that serves.
type running struct {
	sv      *harness.Server
	port    int
	workers []int // its worker processes; none for a peer that serves itself
}

func addrOf(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }

// measure starts p, loads it and stops it.
func (b *bench) measure(p *peer, round int) (*sample, error) {
	log := filepath.Join(b.s.Logs(), p.name+".log")
	logged := fileSize(log)
	r, err := b.startReady(p, log)
	if err != nil {
		return nil, err
	}
	smp, err := b.load(p, r, round)
	if strings.HasPrefix(p.name, "forkline-") && !logSince(log, logged, `msg="cluster ready"`) {
		harness.Logf("warning: %s never logged msg=\"cluster ready\"", p.name)
	}
	if serr := r.sv.Stop(harness.StopBound); serr != nil {
		harness.Logf("%v", serr)
	}
	return smp, err
}

// startReady starts p and waits until its workers serve.
func (b *bench) startReady(p *peer, log string) (running, error) {
	port, err := harness.FreePort()
	if err != nil {
		return running{}, err
	}
	spec, err := p.spec(b, port, log)
	if err != nil {
		return running{}, err
	}
	sv, err := b.s.Start(spec)
	if err != nil {
		return running{}, err
	}
	r := running{sv: sv, port: port}
	distinct, children := p.distinct(*b.c.workers)
	if _, err := harness.WaitDistinct(b.s.Ctx, addrOf(port), distinct, 30*time.Second); err != nil {
		_ = sv.Stop(harness.StopBound)
		return r, fmt.Errorf("%s did not get %d workers serving: %v; its log:\n%s", p.name, distinct, err, harness.Tail(log, 20))
	}
	if children > 0 {
		r.workers, _ = harness.Children(sv.Pid)
		if len(r.workers) != children {
			harness.Logf("warning: %s has %d child processes, expected %d", p.name, len(r.workers), children)
		}
	}
	return r, nil
}

// load runs the warm-up and the measured wrk and samples /proc around it.
func (b *bench) load(p *peer, r running, round int) (*sample, error) {
	url := "http://" + addrOf(r.port) + "/"
	w := harness.Wrk{Threads: *b.c.threads, Conns: *b.c.conns, Seconds: *b.c.warmup, CPUs: *b.c.wrkCPUs}
	if *b.c.newConn {
		w.Header = "Connection: close"
	}
	if _, err := w.Run(b.s.Ctx, url); err != nil {
		return nil, fmt.Errorf("%s: warm-up: %w", p.name, err)
	}
	servers := r.workers
	if len(servers) == 0 {
		servers = []int{r.sv.Pid}
	}
	w.Seconds, w.Latency = *b.c.seconds, true
	before := snapshot(r.sv.Pid, servers)
	run, err := w.Start(b.s.Ctx, url)
	if err != nil {
		return nil, err
	}
	var conns []float64
	// A sampling point 1 s into the run, when wrk has opened its connections.
	if harness.Pause(b.s.Ctx, time.Second) {
		conns = connsPerPid(r.port)
	}
	res, err := run.Wait()
	after := snapshot(r.sv.Pid, servers)
	_ = os.WriteFile(filepath.Join(b.s.Raw(), fmt.Sprintf("wrk.%s.%d.txt", p.name, round)), res.Raw, 0o644)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p.name, err)
	}
	smp := after.minus(before, len(r.workers) > 0)
	smp.wrk, smp.conns = res, conns
	smp.rssParent = harness.RSSkB(r.sv.Pid)
	for _, pid := range r.workers {
		smp.rssWorkers = append(smp.rssWorkers, harness.RSSkB(pid))
	}
	return smp, nil
}

// counters are what /proc says at one moment.
type counters struct {
	at                    time.Time
	parent, servers, busy float64 // CPU ms
	own                   time.Duration
	vol, invol            int64
}

func snapshot(pid int, servers []int) counters {
	c := counters{servers: harness.CPUmsSum(servers)}
	c.vol, c.invol = harness.CtxSwitches(servers)
	c.parent = harness.CPUms(pid)
	c.busy = harness.BusyMS()
	c.own = harness.OwnCPU()
	c.at = time.Now()
	return c
}

// minus is the run between c0 and c: the servers' figures, and the CPU
// that other processes took meanwhile (all busy CPU time minus the
// servers', the parent's when it is apart from them, and that of this
// process and its children: wrk, ss).
func (c counters) minus(c0 counters, parentApart bool) *sample {
	s := &sample{
		parentMS:  c.parent - c0.parent,
		wallMS:    float64(c.at.Sub(c0.at).Microseconds()) / 1000,
		serversMS: c.servers - c0.servers,
		csw:       float64(c.vol - c0.vol + c.invol - c0.invol),
	}
	ours := s.serversMS + float64((c.own-c0.own).Microseconds())/1000
	if parentApart {
		ours += s.parentMS
	}
	s.other = max(0, 100*(c.busy-c0.busy-ours)/(s.wallMS*float64(runtime.NumCPU())))
	return s
}

var rePid = regexp.MustCompile(`pid=(\d+)`)

// connsPerPid counts the established connections on port by the process
// that holds them (from ss), smallest count first.
func connsPerPid(port int) []float64 {
	out, err := exec.Command("ss", "-Htnp", "state", "established", fmt.Sprintf("( sport = :%d )", port)).Output()
	if err != nil {
		return nil
	}
	count := map[string]int{}
	for _, m := range rePid.FindAllSubmatch(out, -1) {
		count[string(m[1])]++
	}
	var v []float64
	for _, n := range count {
		v = append(v, float64(n))
	}
	slices.Sort(v)
	return v
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// logSince says whether the log gained a line with text after offset.
func logSince(path string, offset int64, text string) bool {
	b, err := os.ReadFile(path)
	if err != nil || int64(len(b)) < offset {
		return false
	}
	return strings.Contains(string(b[offset:]), text)
}
