package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/forkline/forkline/bench/internal/harness"
)

// bench is one run of the suite and what it measured.
type bench struct {
	s       *harness.Suite
	c       *config
	setups  []*setup
	loads   []string
	cases   []kase
	res     map[kase]map[int]*sample // by round
	shared  map[string]*shareRes     // by setup
	loadAvg []string                 // before, after throughput, after shares
	notes   []string                 // what the servers' logs said once (steering...)
}

// kase is one setup under one load, one column of a round.
type kase struct{ setup, load string }

func (k kase) String() string { return k.setup + "/" + k.load }

// sample is one measured run.
type sample struct {
	wrk       harness.WrkResult
	parentMS  float64 // the parent's (forkline's, the primary's, the master's) CPU time over the run
	serversMS float64 // every process of the server's, the parent included
	wallMS    float64
	other     float64 // % of all CPUs that other processes took during the run
}

// shareRes is the shares run of one setup: answers by pid.
type shareRes struct {
	byPid  map[int]int
	parent int
	errors int
	kinds  map[string]int
}

// newBench checks the setups and the tools they need and builds the
// binaries.
func newBench(s *harness.Suite, c *config) (*bench, error) {
	ss, err := checkSetups(strings.Fields(*c.setups))
	if err != nil {
		return nil, err
	}
	b := &bench{s: s, c: c, setups: ss, res: map[kase]map[int]*sample{}, shared: map[string]*shareRes{}}
	for _, l := range strings.Fields(*c.loads) {
		if l != "close" && l != "keepalive" {
			return nil, fmt.Errorf("unknown load %q (want close and/or keepalive)", l)
		}
		if !slices.Contains(b.loads, l) {
			b.loads = append(b.loads, l)
		}
	}
	if len(b.loads) == 0 {
		return nil, errors.New("no loads")
	}
	// The cases of a round: each load's setups side by side, so that the
	// runs compared with each other are neighbours in every round.
	for _, l := range b.loads {
		for _, st := range ss {
			if l == "keepalive" && st.closeOnly {
				continue
			}
			b.cases = append(b.cases, kase{st.name, l})
		}
	}
	tools := []string{"wrk", "go"}
	var pkgs []harness.Pkg
	for _, st := range ss {
		tools = append(tools, st.tools...)
		for _, bin := range st.bins {
			if !slices.ContainsFunc(pkgs, func(p harness.Pkg) bool { return p.Out == bin }) {
				pkgs = append(pkgs, pkgOf(s, bin))
			}
		}
	}
	slices.Sort(tools)
	if err := s.Need(slices.Compact(tools)...); err != nil {
		return nil, err
	}
	harness.Logf("building into %s", s.Bin())
	if _, err := s.Build(pkgs...); err != nil {
		return nil, err
	}
	return b, nil
}

// throughput runs every case in every round, in interleaved order.
func (b *bench) throughput() error {
	for round := 1; round <= *b.c.rounds; round++ {
		for _, k := range harness.Order(b.cases, round) {
			smp, err := b.measure(k, round)
			if err != nil {
				return err
			}
			if b.res[k] == nil {
				b.res[k] = map[int]*sample{}
			}
			b.res[k][round] = smp
			harness.Logf("round %d/%d %s: %.0f req/s, %d errors, parent cpu %.0f ms, other processes %.1f%% of the CPUs",
				round, *b.c.rounds, k, smp.wrk.RPS, smp.wrk.Errors, smp.parentMS, smp.other)
		}
	}
	return nil
}

// running is a started server whose workers all answer.
type running struct {
	st     *setup
	sv     *harness.Server
	port   int
	log    string
	logged int64 // the log's size before the start
}

func addrOf(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }

// start starts st on a port no socket uses and waits until its workers
// have all answered on fresh connections.
func (b *bench) start(st *setup, log string) (*running, error) {
	port, err := harness.FreePort()
	if err != nil {
		return nil, err
	}
	argv, env := st.argv(b, addrOf(port))
	r := &running{st: st, port: port, log: log, logged: fileSize(log)}
	r.sv, err = b.s.Start(harness.Spec{Name: st.name, Argv: argv, Env: env, Log: log, Dir: filepath.Join(b.s.Bench, "run")})
	if err != nil {
		return nil, err
	}
	n := st.workersOf(b)
	if _, err := harness.WaitDistinct(b.s.Ctx, addrOf(port), n, 30*time.Second); err != nil {
		b.stop(r)
		return nil, fmt.Errorf("%s did not get %d workers serving: %v; its log:\n%s", st.name, n, err, harness.Tail(log, 20))
	}
	// forkline's own readiness too: a worker may answer before its
	// -ready after=D has passed, and until then the parent's steering
	// keeps its slot out.
	if st.forkline {
		ready := func() bool { return logSince(log, r.logged, `msg="cluster ready"`) }
		if err := harness.Poll(b.s.Ctx, 10*time.Millisecond, 30*time.Second, ready); err != nil {
			b.stop(r)
			return nil, fmt.Errorf("%s: forkline never logged msg=\"cluster ready\": %v; its log:\n%s", st.name, err, harness.Tail(log, 20))
		}
	}
	return r, nil
}

// stop stops the server's process group and every process it had, and
// checks that nothing listens on its port any more.
func (b *bench) stop(r *running) error {
	err := r.sv.Stop(harness.StopBound)
	if perr := harness.Poll(b.s.Ctx, 10*time.Millisecond, 2*time.Second, func() bool { return !listening(r.port) }); perr != nil {
		err = errors.Join(err, fmt.Errorf("%s: port %d still has a listening socket after the stop", r.st.name, r.port))
	}
	if err != nil {
		harness.Logf("%v", err)
	}
	if r.st.forkline {
		b.note(r, `msg="?(steering[^"\n]*)"?`)
		b.note(r, `msg=listening .*(mode=\S+)`)
	}
	return err
}

// wrk is the load k runs for seconds.
func (b *bench) wrk(k kase, seconds int) harness.Wrk {
	w := harness.Wrk{Threads: *b.c.threads, Conns: *b.c.conns, Seconds: seconds}
	if k.load == "close" {
		w.Header = "Connection: close"
	}
	return w
}

// measure starts k's setup, warms it up, measures it and stops it.
func (b *bench) measure(k kase, round int) (*sample, error) {
	st, _ := setupByName(k.setup)
	r, err := b.start(st, filepath.Join(b.s.Logs(), k.setup+".log"))
	if err != nil {
		return nil, err
	}
	smp, err := b.load(k, r, round)
	if serr := b.stop(r); err == nil && serr != nil {
		err = serr
	}
	return smp, err
}

// load runs the warm-up and the measured wrk and samples /proc around it.
func (b *bench) load(k kase, r *running, round int) (*sample, error) {
	url := "http://" + addrOf(r.port) + "/"
	if _, err := b.wrk(k, *b.c.warmup).Run(b.s.Ctx, url); err != nil {
		return nil, fmt.Errorf("%s: warm-up: %w", k, err)
	}
	w := b.wrk(k, *b.c.seconds)
	w.Latency = true
	pids := []int{r.sv.Pid}
	for _, p := range harness.Descendants(r.sv.Pid) {
		pids = append(pids, p.Pid)
	}
	before := snapshot(r.sv.Pid, pids)
	res, err := w.Run(b.s.Ctx, url)
	after := snapshot(r.sv.Pid, pids)
	_ = os.WriteFile(filepath.Join(b.s.Raw(), fmt.Sprintf("wrk.%s.%s.%d.txt", k.setup, k.load, round)), res.Raw, 0o644)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", k, err)
	}
	smp := after.minus(before)
	smp.wrk = res
	return smp, nil
}

// counters are what /proc says at one moment.
type counters struct {
	at              time.Time
	parent, servers float64 // CPU ms
	busy            float64
	own             time.Duration
}

func snapshot(parent int, pids []int) counters {
	return counters{parent: harness.CPUms(parent), servers: harness.CPUmsSum(pids), busy: harness.BusyMS(), own: harness.OwnCPU(), at: time.Now()}
}

// minus is the run between c0 and c: the server's figures, and the CPU
// that other processes took meanwhile (all busy CPU time minus the
// server's and that of this process and its children: wrk).
func (c counters) minus(c0 counters) *sample {
	s := &sample{
		parentMS:  c.parent - c0.parent,
		serversMS: c.servers - c0.servers,
		wallMS:    float64(c.at.Sub(c0.at).Microseconds()) / 1000,
	}
	ours := s.serversMS + float64((c.own-c0.own).Microseconds())/1000
	s.other = max(0, 100*(c.busy-c0.busy-ours)/(s.wallMS*float64(runtime.NumCPU())))
	return s
}

// shares runs, for each setup, SHARES_N requests on fresh connections and
// counts them by the pid that answered.
func (b *bench) shares() error {
	n := *b.c.sharesN
	if n == 0 {
		return nil
	}
	for _, st := range b.setups {
		r, err := b.start(st, filepath.Join(b.s.Logs(), "shares."+st.name+".log"))
		if err != nil {
			return err
		}
		res, err := b.share(st, r, n)
		if serr := b.stop(r); err == nil && serr != nil {
			err = serr
		}
		if err != nil {
			return err
		}
		b.shared[st.name] = res
		harness.Logf("shares %s: %s, %d errors", st.name, formatShares(res, " "), res.errors)
	}
	return nil
}

// share warms r up and sends it n requests, each on a fresh connection,
// from SHARES_CLIENTS clients at once.
func (b *bench) share(st *setup, r *running, n int) (*shareRes, error) {
	url := "http://" + addrOf(r.port) + "/"
	if _, err := b.wrk(kase{st.name, "close"}, *b.c.warmup).Run(b.s.Ctx, url); err != nil {
		return nil, fmt.Errorf("%s: warm-up: %w", st.name, err)
	}
	res := &shareRes{byPid: map[int]int{}, parent: r.sv.Pid, kinds: map[string]int{}}
	var mu sync.Mutex
	var next atomic.Int64
	var wg sync.WaitGroup
	for range *b.c.sharesClients {
		wg.Go(func() {
			for next.Add(1) <= int64(n) && b.s.Ctx.Err() == nil {
				pid, err := harness.Probe(addrOf(r.port))
				mu.Lock()
				if err != nil {
					res.errors++
					res.kinds[err.Error()]++
				} else {
					res.byPid[pid]++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if b.s.Ctx.Err() != nil {
		return nil, b.s.Ctx.Err()
	}
	return res, nil
}

// fractions are the pids' shares of the answers, largest first.
func (r *shareRes) fractions() []float64 {
	total := 0
	for _, c := range r.byPid {
		total += c
	}
	var out []float64
	for _, c := range r.byPid {
		out = append(out, float64(c)/float64(total))
	}
	slices.Sort(out)
	slices.Reverse(out)
	return out
}

func formatShares(r *shareRes, sep string) string {
	var parts []string
	for _, f := range r.fractions() {
		parts = append(parts, fmt.Sprintf("%.3f", f))
	}
	return strings.Join(parts, sep)
}

// listening says whether a TCP socket listens on port (state 0A in
// /proc/net/tcp and tcp6).
func listening(port int) bool {
	hex := fmt.Sprintf(":%04X", port)
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) > 3 && strings.HasSuffix(fields[1], hex) && fields[3] == "0A" {
				return true
			}
		}
	}
	return false
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
	return bytes.Contains(b[offset:], []byte(text))
}

// note records, once per setup, what the first match of re's group in
// the log since the start says (forkline's socket mode, its steering).
func (b *bench) note(r *running, re string) {
	text, err := os.ReadFile(r.log)
	if err != nil || int64(len(text)) < r.logged {
		return
	}
	m := regexp.MustCompile(re).FindSubmatch(text[r.logged:])
	if m == nil {
		return
	}
	n := r.st.name + ": " + string(m[1])
	if !slices.Contains(b.notes, n) {
		b.notes = append(b.notes, n)
	}
}
