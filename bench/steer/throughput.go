package main

import (
	"fmt"
	"strings"

	"github.com/forkline/forkline/bench/internal/harness"
)

// The throughput peers: steering on, off, and off again: the last is the
// control (off ÷ off in the same rounds shows how far two identical
// servers differ on this machine, the floor under any on ÷ off).
var peers = []struct{ name, steering string }{{"on", "required"}, {"off", "off"}, {"off-control", "off"}}

// load is one wrk load: keep-alive, or a new connection per request (the
// program then runs for every request).
type load struct{ name, header string }

var loads = []load{{"keepalive", ""}, {"newconn", "Connection: close"}}

type throughputResult struct {
	ratio, control map[string]float64 // by load: median of per-round on ÷ off, off-control ÷ off
	rows           []string
}

// throughput measures the peers in interleaved rounds under each load.
func (b *bench) throughput() (throughputResult, error) {
	res := throughputResult{ratio: map[string]float64{}, control: map[string]float64{}}
	for _, l := range loads {
		rps := map[string]harness.PerRound{}
		for _, p := range peers {
			rps[p.name] = harness.PerRound{}
		}
		for round := 1; round <= *b.c.rounds; round++ {
			for _, p := range harness.Order(peers, round) {
				v, err := b.wrk(p.steering, l.header)
				if err != nil {
					return res, err
				}
				rps[p.name][round] = v
			}
		}
		var ratios, controls []float64
		for _, r := range rps["on"].Rounds() {
			on, off, ctl := rps["on"][r], rps["off"][r], rps["off-control"][r]
			ratios, controls = append(ratios, on/off), append(controls, ctl/off)
			res.rows = append(res.rows, fmt.Sprintf("| %s | %d | %.0f | %.0f | %.0f | %.3f | %.3f |", l.name, r, on, off, ctl, on/off, ctl/off))
		}
		res.ratio[l.name], res.control[l.name] = harness.Median(ratios), harness.Median(controls)
	}
	return res, nil
}

func (b *bench) wrk(steering, header string) (float64, error) {
	cl, err := b.start(steering)
	if err != nil {
		return 0, err
	}
	defer cl.Stop(harness.StopBound)
	url := "http://" + cl.addr + "/"
	if _, err := (harness.Wrk{Threads: 1, Conns: 64, Seconds: 1, Header: header}).Run(b.s.Ctx, url); err != nil {
		return 0, err
	}
	res, err := harness.Wrk{Threads: 1, Conns: 64, Seconds: *b.c.seconds, Header: header}.Run(b.s.Ctx, url)
	return res.RPS, err
}

func (b *bench) report(lines []string, t throughputResult) harness.Report {
	body := "```\n" + strings.Join(lines, "\n") + "\n```\n\n" +
		"Throughput, hello world, wrk -t1 -c64, keep-alive and with a new connection per request; " +
		"steering on (required), off, and off again as the control:\n\n" +
		"| load | round | req/s on | req/s off | req/s off (control) | on ÷ off | control ÷ off |\n|---|--:|--:|--:|--:|--:|--:|\n" +
		strings.Join(t.rows, "\n") + "\n"
	return harness.Report{
		Title: "forkline steering",
		Tools: []string{"wrk"},
		Header: []string{fmt.Sprintf("Fault cases: 2 workers, %d requests one after the other on fresh connections, 1 s timeout each; scaledown: %d connections at once, 15 s timeout", *b.c.requests, *b.c.queued),
			fmt.Sprintf("Throughput: %d interleaved rounds of %d s after 1 s of warm-up, a fresh server each", *b.c.rounds, *b.c.seconds)},
		Body: body,
	}
}
