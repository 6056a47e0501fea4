package main

import (
	"cmp"
	"fmt"
	"math"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/forkline/forkline/bench/internal/harness"
)

var (
	mainKeys    = []string{"ipc-roundtrip-us", "ipc-oneway-msgs-per-s", "ipc-relay-msgs-per-s", "node-roundtrip-us", "node-oneway-msgs-per-s"}
	extraKeys   = []string{"ipc-send-allocs-per-msg", "ipc-recv-allocs-per-msg", "ipc-relay-dropped", "ipc-relay-windowed-msgs-per-s", "ipc-send-msgs-per-s"}
	floorKeys   = []string{"floor-netpoll-roundtrip-us", "floor-blocking-roundtrip-us"}
	oneCPUKeys  = []string{"ipc-roundtrip-one-cpu-us", "node-roundtrip-one-cpu-us", "floor-netpoll-one-cpu-us"}
	reP99       = regexp.MustCompile(`(?m)^roundtrip: .* p99 ([0-9.]*) us`)
	reRTCPU     = regexp.MustCompile(`(?m)^roundtrip: per round trip: CPU time [a-z]* ([0-9.]*) us, worker 1 ([0-9.]*) us`)
	notMeasured = math.NaN()
)

func (u *suite) controlKeys() []string {
	if u.oneCPU {
		return append(floorKeys[:len(floorKeys):len(floorKeys)], oneCPUKeys...)
	}
	return floorKeys
}

// source is the run, and the key in its output, that hold key's figure.
func source(key string) (run, k string) {
	switch {
	case key == "ipc-roundtrip-one-cpu-us":
		return "ipc1", "ipc-roundtrip-us"
	case key == "node-roundtrip-one-cpu-us":
		return "node1", "node-roundtrip-us"
	case key == "floor-netpoll-one-cpu-us":
		return "floor1", "floor-netpoll-roundtrip-us"
	case strings.HasPrefix(key, "floor-netpoll-"):
		return "floor-netpoll", key
	case strings.HasPrefix(key, "floor-blocking-"):
		return "floor-blocking", key
	case strings.HasPrefix(key, "node-"):
		return "node", key
	}
	return "ipc", key
}

// value is the text after key in a run's "key value" lines; "" if none.
func value(out, key string) string {
	for line := range strings.Lines(out) {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == key {
			return f[1]
		}
	}
	return ""
}

// fig is key's figure in round r, as its program printed it.
func (u *suite) fig(key string, r int) string {
	run, k := source(key)
	return value(u.out[run][r].stdout, k)
}

// num formats a computed figure: whole numbers without decimals, others
// with what they need (as the shell's awk printed them).
func num(v float64) string {
	switch {
	case math.IsNaN(v):
		return "?"
	case v == math.Trunc(v) && math.Abs(v) < 1e15:
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
	return strconv.FormatFloat(math.Round(v*1000)/1000, 'f', -1, 64)
}

// medianOf is the median of the figures' texts, as text and as a number
// (NaN for none). With an odd count the middle figure keeps its text, as
// the program printed it ("0.00"); an even count's mean is formatted.
func medianOf(texts []string) (string, float64) {
	type fig struct {
		text string
		v    float64
	}
	var figs []fig
	for _, t := range texts {
		if f, err := strconv.ParseFloat(t, 64); err == nil {
			figs = append(figs, fig{t, f})
		}
	}
	if len(figs) == 0 {
		return "?", notMeasured
	}
	slices.SortStableFunc(figs, func(a, b fig) int { return cmp.Compare(a.v, b.v) })
	n := len(figs)
	if n%2 == 1 {
		return figs[n/2].text, figs[n/2].v
	}
	m := (figs[n/2-1].v + figs[n/2].v) / 2
	return num(m), m
}

// med is key's median over the rounds.
func (u *suite) med(key string) (string, float64) {
	var texts []string
	for r := 1; r <= *u.c.rounds; r++ {
		texts = append(texts, u.fig(key, r))
	}
	return medianOf(texts)
}

// medV is key's median as a number.
func (u *suite) medV(key string) float64 {
	_, v := u.med(key)
	return v
}

// ratio is a/b to 2 decimals, "?" if either is missing or b is 0.
func ratio(a, b float64) string {
	if math.IsNaN(a) || math.IsNaN(b) || b == 0 {
		return "?"
	}
	return fmt.Sprintf("%.2f", a/b)
}

func parse(s string) float64 {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return notMeasured
	}
	return f
}

// roundRatios is the median over the rounds of a/b, then each round's.
func (u *suite) roundRatios(a, b string) string {
	var rs []string
	for r := 1; r <= *u.c.rounds; r++ {
		rs = append(rs, ratio(parse(u.fig(a, r)), parse(u.fig(b, r))))
	}
	m, _ := medianOf(rs)
	return fmt.Sprintf("%sx (rounds: %s)", m, strings.Join(rs, " "))
}

func verdict(v, target float64, atMost bool) string {
	if (atMost && v <= target) || (!atMost && v >= target) {
		return "met"
	}
	return "NOT met"
}

// finish prints the report and writes the results file.
func (u *suite) finish() error {
	text := u.report()
	fmt.Print(text)
	header := []string{"Load average (1 min) before each round: " + strings.Join(u.loads, " ") + " (a shared machine: latency figures move with it)"}
	if g, ok := os.LookupEnv("GOMAXPROCS"); ok {
		header = append(header, "GOMAXPROCS="+g+" in the environment: the parent's and the workers'")
	}
	_, err := u.s.WriteResults(harness.Report{
		Title:  "forkline messaging vs Node's cluster",
		Tools:  []string{"node"},
		Header: header,
		Body:   "```\n" + text + "```\n",
	})
	return err
}
