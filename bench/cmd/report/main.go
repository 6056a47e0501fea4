// Command report turns the raw output of bench/run.sh into the markdown
// results table: median req/s per peer over the interleaved rounds, the
// ratios forkline is judged by, the parent's CPU time during the run, RSS of
// the parent and of each worker, and the median startup time.
//
// Input, all in -raw DIR:
//
//	wrk.<peer>.<round>.txt   wrk --latency output of each measured run
//	samples.tsv              tab-separated lines written by run.sh:
//	  cpu     <peer> <round> <parent utime+stime delta, ms> <run wall time, ms>
//	  wcpu    <peer> <round> <utime+stime delta of the workers (or the one process), ms>
//	  csw     <peer> <round> <context switches of the workers' threads (or the one process's): voluntary> <involuntary>
//	  rss     <peer> <round> <parent VmRSS kB> [<worker VmRSS kB>...]
//	  startup <peer> <sample> <ms>
//	  conns   <peer> <round> <established connections of each worker>...
//	  other   <peer> <round> <% of all CPUs that other processes took during the run>
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// peer describes one server of the benchmark.
type peer struct {
	name, label string
	baseline    string // name of the peer it is compared with; "" = none
	single      bool   // one process: no parent/worker split
}

var peers = []peer{
	{name: "nethttp", label: "net/http, 1 process", single: true},
	{name: "nethttp-tcp", label: "net/http, 1 process, plain TCP (control)", baseline: "nethttp", single: true},
	{name: "forkline-nethttp", label: "forkline + net/http", baseline: "nethttp"},
	{name: "forkline-nethttp-2p", label: "forkline + net/http, 2 Ps per worker", baseline: "nethttp"},
	{name: "forkline-nethttp-1w", label: "forkline + net/http, 1 worker (control)", baseline: "nethttp"},
	{name: "fasthttp-prefork", label: "fasthttp/prefork (reuseport)"},
	{name: "forkline-fasthttp", label: "forkline + fasthttp", baseline: "fasthttp-prefork"},
	{name: "nginx", label: "nginx (reuseport), reference", baseline: "nethttp"},
	{name: "node-cluster", label: "Node cluster (rr), reference", baseline: "nethttp"},
}

type result struct {
	rps      map[int]float64 // by round
	reqs     map[int]float64 // requests served in the run, by round
	wcpu     map[int]float64 // workers' CPU ms, by round
	csw      map[int]float64 // workers' context switches, by round
	p99      []float64       // ms
	errors   int
	cpuMS    []float64
	cpuPct   []float64
	rssPar   []float64 // kB
	rssWork  [][]float64
	conns    [][]float64
	startups []float64       // ms
	other    map[int]float64 // % of the CPUs other processes took, by round
}

func main() {
	raw := flag.String("raw", "", "directory with wrk.*.txt and samples.tsv")
	flag.Parse()
	if *raw == "" {
		fmt.Fprintln(os.Stderr, "usage: report -raw DIR")
		os.Exit(2)
	}
	res, err := load(*raw)
	if err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		os.Exit(1)
	}
	write(os.Stdout, res)
}

func load(dir string) (map[string]*result, error) {
	res := make(map[string]*result)
	get := func(name string) *result {
		r := res[name]
		if r == nil {
			r = &result{rps: make(map[int]float64), reqs: make(map[int]float64), wcpu: make(map[int]float64), csw: make(map[int]float64), other: make(map[int]float64)}
			res[name] = r
		}
		return r
	}
	files, err := filepath.Glob(filepath.Join(dir, "wrk.*.txt"))
	if err != nil {
		return nil, err
	}
	for _, f := range files {
		parts := strings.Split(strings.TrimSuffix(filepath.Base(f), ".txt"), ".")
		if len(parts) != 3 {
			continue
		}
		round, err := strconv.Atoi(parts[2])
		if err != nil {
			return nil, fmt.Errorf("%s: bad round: %w", f, err)
		}
		w, err := parseWrk(f)
		if err != nil {
			return nil, err
		}
		r := get(parts[1])
		r.rps[round] = w.rps
		r.reqs[round] = w.requests
		if w.p99 > 0 {
			r.p99 = append(r.p99, w.p99)
		}
		r.errors += w.errors
	}

	f, err := os.Open(filepath.Join(dir, "samples.tsv"))
	if errors.Is(err, os.ErrNotExist) {
		return res, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 {
			continue
		}
		if len(fields) < 4 {
			return nil, fmt.Errorf("samples.tsv:%d: too few fields", line)
		}
		nums := make([]float64, 0, len(fields)-3)
		for _, s := range fields[3:] {
			v, err := strconv.ParseFloat(s, 64)
			if err != nil {
				return nil, fmt.Errorf("samples.tsv:%d: %w", line, err)
			}
			nums = append(nums, v)
		}
		r := get(fields[1])
		switch fields[0] {
		case "cpu":
			if len(nums) != 2 || nums[1] <= 0 {
				return nil, fmt.Errorf("samples.tsv:%d: cpu wants <ms> <run ms>", line)
			}
			r.cpuMS = append(r.cpuMS, nums[0])
			r.cpuPct = append(r.cpuPct, 100*nums[0]/nums[1])
		case "wcpu", "other":
			round, err := strconv.Atoi(fields[2])
			if err != nil {
				return nil, fmt.Errorf("samples.tsv:%d: bad round: %w", line, err)
			}
			if fields[0] == "wcpu" {
				r.wcpu[round] = nums[0]
			} else {
				r.other[round] = nums[0]
			}
		case "csw":
			round, err := strconv.Atoi(fields[2])
			if err != nil || len(nums) != 2 {
				return nil, fmt.Errorf("samples.tsv:%d: csw wants <round> <voluntary> <involuntary>", line)
			}
			r.csw[round] = nums[0] + nums[1]
		case "rss":
			r.rssPar = append(r.rssPar, nums[0])
			r.rssWork = append(r.rssWork, nums[1:])
		case "startup":
			r.startups = append(r.startups, nums[0])
		case "conns":
			r.conns = append(r.conns, nums)
		default:
			return nil, fmt.Errorf("samples.tsv:%d: unknown kind %q", line, fields[0])
		}
	}
	return res, sc.Err()
}

type wrkOut struct {
	rps      float64
	requests float64
	p99      float64 // ms
	errors   int
}

var (
	reRPS    = regexp.MustCompile(`(?m)^Requests/sec:\s+([0-9.]+)`)
	reReqs   = regexp.MustCompile(`(?m)^\s+(\d+) requests in `)
	reP99    = regexp.MustCompile(`(?m)^\s+99%\s+([0-9.]+)(us|ms|s)\s*$`)
	reSocket = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
	reNon2xx = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
)

func parseWrk(path string) (wrkOut, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return wrkOut{}, err
	}
	var w wrkOut
	m := reRPS.FindSubmatch(b)
	if m == nil {
		return w, fmt.Errorf("%s: no Requests/sec line", path)
	}
	w.rps, _ = strconv.ParseFloat(string(m[1]), 64)
	if m := reReqs.FindSubmatch(b); m != nil {
		w.requests, _ = strconv.ParseFloat(string(m[1]), 64)
	}
	if m := reP99.FindSubmatch(b); m != nil {
		v, _ := strconv.ParseFloat(string(m[1]), 64)
		d, _ := time.ParseDuration(fmt.Sprint(v) + string(m[2]))
		w.p99 = float64(d) / float64(time.Millisecond)
	}
	if m := reSocket.FindSubmatch(b); m != nil {
		for _, s := range m[1:] {
			n, _ := strconv.Atoi(string(s))
			w.errors += n
		}
	}
	if m := reNon2xx.FindSubmatch(b); m != nil {
		n, _ := strconv.Atoi(string(m[1]))
		w.errors += n
	}
	return w, nil
}

// cpuPerRequest returns, for each round, the workers' CPU time per request
// in microseconds.
func cpuPerRequest(r *result) []float64 {
	var out []float64
	for round, ms := range r.wcpu {
		if n := r.reqs[round]; n > 0 {
			out = append(out, ms*1000/n)
		}
	}
	return out
}

// switchesPerRequest returns, for each round, the workers' context
// switches per request.
func switchesPerRequest(r *result) []float64 {
	var out []float64
	for round, n := range r.csw {
		if reqs := r.reqs[round]; reqs > 0 {
			out = append(out, n/reqs)
		}
	}
	return out
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func values(m map[int]float64) []float64 {
	out := make([]float64, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

// roundRatios returns a/b for each round both have, in round order.
func roundRatios(a, b *result) []float64 {
	var rounds []int
	for r := range a.rps {
		if _, ok := b.rps[r]; ok && b.rps[r] > 0 {
			rounds = append(rounds, r)
		}
	}
	slices.Sort(rounds)
	out := make([]float64, 0, len(rounds))
	for _, r := range rounds {
		out = append(out, a.rps[r]/b.rps[r])
	}
	return out
}

func labelOf(name string) string {
	for _, p := range peers {
		if p.name == name {
			return p.label
		}
	}
	return name
}

func mb(kb float64) string { return fmt.Sprintf("%.1f", kb/1024) }

func write(w io.Writer, res map[string]*result) {
	fmt.Fprintln(w, "| Peer (2 workers) | req/s, median | vs baseline | p99 latency, median | wrk errors | worker CPU per request, median | worker context switches per request, median | connections per worker | parent CPU during run | RSS parent, MB | RSS workers, MB | startup to 2 workers serving, median ms |")
	fmt.Fprintln(w, "|---|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
	for _, p := range peers {
		r := res[p.name]
		if r == nil {
			continue
		}
		rps := median(values(r.rps))
		ratio := "—"
		if b := res[p.baseline]; b != nil && len(b.rps) > 0 {
			ratio = fmt.Sprintf("%.3f × %s", rps/median(values(b.rps)), labelOf(p.baseline))
		}
		cpu, rssPar, rssWork := "—", "—", "—"
		if p.single {
			cpu = "n/a (serves itself)"
			if len(r.rssPar) > 0 {
				rssWork = mb(median(r.rssPar)) + " (the one process)"
			}
		} else {
			if len(r.cpuMS) > 0 {
				cpu = fmt.Sprintf("%.0f ms (%.2f%%)", median(r.cpuMS), median(r.cpuPct))
			}
			if len(r.rssPar) > 0 {
				rssPar = mb(median(r.rssPar))
				rssWork = workersRSS(r.rssWork)
			}
		}
		startup := "—"
		if len(r.startups) > 0 {
			startup = fmt.Sprintf("%.1f (n=%d, %.1f–%.1f)", median(r.startups), len(r.startups), slices.Min(r.startups), slices.Max(r.startups))
		}
		rpsCell, p99 := "—", "—"
		if len(r.rps) > 0 {
			rpsCell = fmt.Sprintf("%.0f", rps)
			if len(r.p99) > 0 {
				p99 = fmt.Sprintf("%.2f ms", median(r.p99))
			}
		}
		perReq := "—"
		if v := cpuPerRequest(r); len(v) > 0 {
			perReq = fmt.Sprintf("%.1f µs", median(v))
		}
		switches := "—"
		if v := switchesPerRequest(r); len(v) > 0 {
			switches = fmt.Sprintf("%.2f", median(v))
		}
		conns := "—"
		if len(r.conns) > 0 {
			conns = spread(r.conns, func(v float64) string { return fmt.Sprintf("%.0f", v) }, " / ")
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %d | %s | %s | %s | %s | %s | %s | %s |\n",
			p.label, rpsCell, ratio, p99, r.errors, perReq, switches, conns, cpu, rssPar, rssWork, startup)
	}

	fmt.Fprintln(w)
	fmt.Fprintln(w, "Ratios (median over rounds of req/s; per-round ratios of the interleaved runs in brackets):")
	fmt.Fprintln(w)
	for _, p := range peers {
		if !strings.HasPrefix(p.name, "forkline-") {
			continue
		}
		a, b := res[p.name], res[p.baseline]
		if a == nil || b == nil || len(a.rps) == 0 || len(b.rps) == 0 {
			continue
		}
		per := roundRatios(a, b)
		strs := make([]string, len(per))
		for i, v := range per {
			strs[i] = fmt.Sprintf("%.3f", v)
		}
		fmt.Fprintf(w, "- %s vs %s: **%.3f** [%s]\n", labelOf(p.name), labelOf(p.baseline),
			median(values(a.rps))/median(values(b.rps)), strings.Join(strs, ", "))
	}

	writeQuiet(w, res)
	writeRounds(w, res)
}

// quietLimit is how much of the CPUs other processes may have taken during
// a run for it to count as undisturbed.
const quietLimit = 5.0

// writeQuiet prints the forkline ratios again, over only the rounds in which
// neither run of the pair was disturbed by other processes.
func writeQuiet(w io.Writer, res map[string]*result) {
	for _, p := range peers {
		if !strings.HasPrefix(p.name, "forkline-") {
			continue
		}
		a, b := res[p.name], res[p.baseline]
		if a == nil || b == nil {
			continue
		}
		var rounds []int
		for r := range a.rps {
			oa, okA := a.other[r]
			ob, okB := b.other[r]
			if _, ok := b.rps[r]; ok && okA && okB && oa < quietLimit && ob < quietLimit {
				rounds = append(rounds, r)
			}
		}
		slices.Sort(rounds)
		if len(rounds) == 0 {
			fmt.Fprintf(w, "- %s vs %s, undisturbed rounds only (other processes < %.0f%% of the CPUs in both runs): none\n",
				labelOf(p.name), labelOf(p.baseline), quietLimit)
			continue
		}
		ratios := make([]float64, len(rounds))
		strs := make([]string, len(rounds))
		for i, r := range rounds {
			ratios[i] = a.rps[r] / b.rps[r]
			strs[i] = fmt.Sprintf("round %d: %.3f", r, ratios[i])
		}
		fmt.Fprintf(w, "- %s vs %s, undisturbed rounds only (other processes < %.0f%% of the CPUs in both runs): median **%.3f** [%s]\n",
			labelOf(p.name), labelOf(p.baseline), quietLimit, median(ratios), strings.Join(strs, ", "))
	}
}

func hasKey(m map[int]float64, k int) bool {
	_, ok := m[k]
	return ok
}

// writeRounds prints every run's req/s, and how much CPU other processes
// took meanwhile, so that the noise behind the medians can be judged.
func writeRounds(w io.Writer, res map[string]*result) {
	nrounds := 0
	for _, r := range res {
		for round := range r.rps {
			nrounds = max(nrounds, round)
		}
	}
	if nrounds == 0 {
		return
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Every run (req/s; in brackets, the share of all CPUs that other processes took during the run):")
	fmt.Fprintln(w)
	fmt.Fprint(w, "| Peer |")
	for i := 1; i <= nrounds; i++ {
		fmt.Fprintf(w, " round %d |", i)
	}
	fmt.Fprint(w, "\n|---|")
	for i := 1; i <= nrounds; i++ {
		fmt.Fprint(w, "--:|")
	}
	fmt.Fprintln(w)
	for _, p := range peers {
		r := res[p.name]
		if r == nil || len(r.rps) == 0 {
			continue
		}
		fmt.Fprintf(w, "| %s |", p.label)
		for i := 1; i <= nrounds; i++ {
			v, ok := r.rps[i]
			switch {
			case !ok:
				fmt.Fprint(w, " — |")
			case hasKey(r.other, i):
				fmt.Fprintf(w, " %.0f (%.0f%%) |", v, r.other[i])
			default:
				fmt.Fprintf(w, " %.0f |", v)
			}
		}
		fmt.Fprintln(w)
	}
}

// workersRSS is the per-worker median RSS.
func workersRSS(rounds [][]float64) string { return spread(rounds, mb, " + ") }

// spread is the per-worker median of a per-round list of per-worker values,
// the workers sorted in each round so that "smallest" and "largest" line up
// across rounds.
func spread(rounds [][]float64, format func(float64) string, sep string) string {
	width := 0
	for _, ws := range rounds {
		width = max(width, len(ws))
	}
	if width == 0 {
		return "—"
	}
	cols := make([][]float64, width)
	for _, ws := range rounds {
		s := slices.Clone(ws)
		slices.Sort(s)
		for i, v := range s {
			cols[i] = append(cols[i], v)
		}
	}
	parts := make([]string, width)
	for i, c := range cols {
		parts[i] = format(median(c))
	}
	return strings.Join(parts, sep)
}
