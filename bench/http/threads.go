package main

import (
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/forkline/forkline/bench/internal/harness"
)

// threads is `go run ./http threads [peer...]`: where a
// server's context switches go, thread by thread. For each peer (default:
// nethttp forkline-nethttp) it loads one server with wrk for DURATION
// seconds (4 unless set) and prints, for every thread of its serving
// processes (the workers; the one process for nethttp): voluntary and
// involuntary context switches and CPU time over the run (from
// /proc/<pid>/task/<tid>/{status,stat}), per request too, and what the
// thread was waiting in most often when sampled (/proc/<pid>/task/<tid>/wchan,
// 5 times a second): hrtimer_nanosleep is the Go runtime's sysmon,
// do_epoll_wait its netpoller, futex_* a parked thread.
//
// It is how the README's figure on sysmon was taken: with two 1-P workers
// sharing two CPUs with wrk, each worker's sysmon wakes thousands of times
// a second; in one 2-P process it mostly sleeps. Knobs: DURATION, CONNS,
// THREADS, WORKERS, SERVER_CPUS, WRK_CPUS, FORKLINE_MODE. It writes no
// results file.
func threads(s *harness.Suite, c *config, names []string) error {
	if len(names) == 0 {
		names = []string{"nethttp", "forkline-nethttp"}
	}
	if !s.Knobs.IsSet("duration") {
		*c.seconds = 4
	}
	b, err := newBench(s, c, names)
	if err != nil {
		return err
	}
	for _, p := range b.peers {
		if err := b.threadsOf(p); err != nil {
			return err
		}
	}
	return nil
}

// threadKey names a thread as "pid/tid" does.
type threadKey struct{ pid, tid int }

func (b *bench) threadsOf(p *peer) error {
	r, err := b.startReady(p, b.s.Logs()+"/"+p.name+".log")
	if err != nil {
		return err
	}
	defer func() {
		if err := r.sv.Stop(harness.StopBound); err != nil {
			harness.Logf("%v", err)
		}
	}()
	servers := r.workers
	if len(servers) == 0 {
		servers = []int{r.sv.Pid}
	}
	url := "http://" + addrOf(r.port) + "/"
	w := harness.Wrk{Threads: *b.c.threads, Conns: *b.c.conns, Seconds: 1, CPUs: *b.c.wrkCPUs}
	if _, err := w.Run(b.s.Ctx, url); err != nil { // warm-up
		return err
	}
	before := threadSnapshot(servers)
	w.Seconds = *b.c.seconds
	run, err := w.Start(b.s.Ctx, url)
	if err != nil {
		return err
	}
	waits, res, err := sampleWchans(servers, run)
	if err != nil {
		return err
	}
	b.printThreads(p, res.RPS, before, threadSnapshot(servers), waits)
	return nil
}

func threadSnapshot(pids []int) map[threadKey]harness.Thread {
	out := map[threadKey]harness.Thread{}
	for _, p := range pids {
		for _, t := range harness.Threads(p) {
			out[threadKey{t.Pid, t.Tid}] = t
		}
	}
	return out
}

// sampleWchans counts, 5 times a second until wrk is done, what each
// thread waits in.
func sampleWchans(pids []int, run *harness.WrkRun) (map[threadKey]map[string]int, harness.WrkResult, error) {
	type done struct {
		res harness.WrkResult
		err error
	}
	end := make(chan done, 1)
	go func() {
		res, err := run.Wait()
		end <- done{res, err}
	}()
	waits := map[threadKey]map[string]int{}
	tick := time.NewTicker(200 * time.Millisecond) // the sampling rate
	defer tick.Stop()
	for {
		select {
		case d := <-end:
			return waits, d.res, d.err
		case <-tick.C:
		}
		for _, p := range pids {
			for _, t := range harness.Threads(p) {
				k := threadKey{p, t.Tid}
				if waits[k] == nil {
					waits[k] = map[string]int{}
				}
				if wc := harness.Wchan(p, t.Tid); wc != "" && wc != "0" {
					waits[k][wc]++
				}
			}
		}
	}
}

func (b *bench) printThreads(p *peer, rps float64, before, after map[threadKey]harness.Thread, waits map[threadKey]map[string]int) {
	secs := float64(*b.c.seconds)
	fmt.Printf("== %s: %.2f req/s over %ds (wrk -t%d -c%d)\n", p.name, rps, *b.c.seconds, *b.c.threads, *b.c.conns)
	fmt.Printf("%-14s %9s %9s %8s %8s  %s\n", "process/thread", "voluntary", "involunt.", "cpu ms", "cs/req", "waits most in")
	keys := slices.SortedFunc(maps.Keys(after), func(x, y threadKey) int {
		if x.pid != y.pid {
			return x.pid - y.pid
		}
		return x.tid - y.tid
	})
	for _, k := range keys {
		t0, ok := before[k]
		if !ok {
			continue // a thread started during the run: no baseline
		}
		t1 := after[k]
		v, n := t1.Voluntary-t0.Voluntary, t1.Involuntary-t0.Involuntary
		cpu := (t1.CPUTicks - t0.CPUTicks) * 10 // USER_HZ ticks to ms
		if v+n+cpu == 0 {
			continue
		}
		fmt.Printf("%-14s %9d %9d %8d %8.3f  %s\n", fmt.Sprintf("%d/%d", k.pid, k.tid), v, n, cpu,
			float64(v+n)/(rps*secs), mostOf(waits[k]))
	}
	fmt.Println()
}

// mostOf is the wait seen most often; "running" if none was.
func mostOf(m map[string]int) string {
	best, n := "running", 0
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if m[k] > n {
			best, n = k, m[k]
		}
	}
	return best
}
