package harness

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"time"
)

// Wrk is one wrk load.
type Wrk struct {
	Threads, Conns int
	Seconds        int
	Latency        bool   // --latency: the percentiles
	Header         string // one extra request header ("Connection: close"); "" = none
	CPUs           string // taskset CPU list for wrk; "" = any CPU
}

// Argv is the command line for url.
func (w Wrk) Argv(url string) []string {
	var argv []string
	if w.CPUs != "" {
		argv = append(argv, "taskset", "-c", w.CPUs)
	}
	argv = append(argv, "wrk")
	if w.Latency {
		argv = append(argv, "--latency")
	}
	argv = append(argv, fmt.Sprintf("-t%d", w.Threads), fmt.Sprintf("-c%d", w.Conns), fmt.Sprintf("-d%ds", w.Seconds))
	if w.Header != "" {
		argv = append(argv, "-H", w.Header)
	}
	return append(argv, url)
}

// WrkRun is a wrk process under way.
type WrkRun struct {
	cmd *exec.Cmd
	out bytes.Buffer
}

// Start starts wrk against url. wrk is this process's child, in its group:
// it ends on its own after w.Seconds, or when ctx ends.
func (w Wrk) Start(ctx context.Context, url string) (*WrkRun, error) {
	argv := w.Argv(url)
	r := &WrkRun{cmd: exec.CommandContext(ctx, argv[0], argv[1:]...)}
	r.cmd.Stdout = &r.out
	r.cmd.Stderr = &r.out
	if err := r.cmd.Start(); err != nil {
		return nil, err
	}
	return r, nil
}

// Wait waits for wrk's end and parses its output.
func (r *WrkRun) Wait() (WrkResult, error) {
	err := r.cmd.Wait()
	if err != nil {
		return WrkResult{Raw: r.out.Bytes()}, fmt.Errorf("wrk: %w: %s", err, bytes.TrimSpace(r.out.Bytes()))
	}
	return ParseWrk(r.out.Bytes())
}

// Run runs wrk to its end.
func (w Wrk) Run(ctx context.Context, url string) (WrkResult, error) {
	r, err := w.Start(ctx, url)
	if err != nil {
		return WrkResult{}, err
	}
	return r.Wait()
}

// WrkResult is what wrk reported.
type WrkResult struct {
	RPS, Requests      float64
	P50, P75, P90, P99 float64 // ms; 0 without --latency
	Errors             int     // socket errors (connect, read, write, timeout) and non-2xx/3xx answers
	Raw                []byte
}

var (
	reRPS    = regexp.MustCompile(`(?m)^Requests/sec:\s+([0-9.]+)`)
	reReqs   = regexp.MustCompile(`(?m)^\s+(\d+) requests in `)
	rePct    = regexp.MustCompile(`(?m)^\s+(50|75|90|99)%\s+([0-9.]+)(us|ms|s|m)\s*$`)
	reSocket = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
	reNon2xx = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
)

// ParseWrk reads wrk's output.
func ParseWrk(b []byte) (WrkResult, error) {
	w := WrkResult{Raw: b}
	m := reRPS.FindSubmatch(b)
	if m == nil {
		return w, fmt.Errorf("wrk: no Requests/sec line in %q", b)
	}
	w.RPS, _ = strconv.ParseFloat(string(m[1]), 64)
	if m := reReqs.FindSubmatch(b); m != nil {
		w.Requests, _ = strconv.ParseFloat(string(m[1]), 64)
	}
	for _, m := range rePct.FindAllSubmatch(b, -1) {
		v, _ := strconv.ParseFloat(string(m[2]), 64)
		d, _ := time.ParseDuration(strconv.FormatFloat(v, 'f', -1, 64) + string(m[3]))
		ms := float64(d) / float64(time.Millisecond)
		switch string(m[1]) {
		case "50":
			w.P50 = ms
		case "75":
			w.P75 = ms
		case "90":
			w.P90 = ms
		case "99":
			w.P99 = ms
		}
	}
	if m := reSocket.FindSubmatch(b); m != nil {
		for _, s := range m[1:] {
			n, _ := strconv.Atoi(string(s))
			w.Errors += n
		}
	}
	if m := reNon2xx.FindSubmatch(b); m != nil {
		n, _ := strconv.Atoi(string(m[1]))
		w.Errors += n
	}
	return w, nil
}
