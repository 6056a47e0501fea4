package main

import (
	"fmt"
	"strings"
)

// report is the suite's text: the medians, the other figures, the
// controls, every round, the ratios and the targets.
func (u *suite) report() string {
	var b strings.Builder
	keys := func(ks []string) {
		for _, k := range ks {
			m, _ := u.med(k)
			fmt.Fprintf(&b, "%s %s\n", k, m)
		}
	}
	keys(mainKeys)
	fmt.Fprintf(&b, "\n# medians of %d interleaved rounds; other figures of bench/ipc/forkline:\n", *u.c.rounds)
	keys(extraKeys)
	b.WriteString("\n# controls for the round trip (medians of the same rounds; see bench/ipc/main.go):\n")
	keys(u.controlKeys())
	b.WriteString("\n")
	u.writeRounds(&b)
	u.writeControlRounds(&b)
	b.WriteString("\n")
	u.writeRatios(&b)
	u.writeTargets(&b)
	return b.String()
}

const roundRow = "# %-5s %5s  %6s %6s %9s  %9s %9s %7s  %6s %6s %9s  %9s\n"

func (u *suite) writeRounds(b *strings.Builder) {
	b.WriteString("# per round (load: 1-minute load average before the round; cpu: CPU time per round trip\n")
	b.WriteString("# in the parent/worker 1, µs; rt and p99 in µs, rates in msg/s):\n")
	fmt.Fprintf(b, roundRow, "round", "load", "ipc-rt", "p99", "cpu", "oneway", "relay", "dropped", "node-rt", "p99", "cpu", "node-oneway")
	for r := 1; r <= *u.c.rounds; r++ {
		ipc, node := u.out["ipc"][r], u.out["node"][r]
		fmt.Fprintf(b, roundRow, fmt.Sprint(r), u.loads[r-1],
			value(ipc.stdout, "ipc-roundtrip-us"), p99(ipc.stderr), rtCPU(ipc.stderr),
			value(ipc.stdout, "ipc-oneway-msgs-per-s"), value(ipc.stdout, "ipc-relay-msgs-per-s"),
			value(ipc.stdout, "ipc-relay-dropped"),
			value(node.stdout, "node-roundtrip-us"), p99(node.stderr), rtCPU(node.stderr),
			value(node.stdout, "node-oneway-msgs-per-s"))
	}
}

// p99 is the p99 of one run's round trips, from its stderr.
func p99(stderr string) string {
	if m := reP99.FindStringSubmatch(stderr); m != nil {
		return m[1]
	}
	return ""
}

// rtCPU is the CPU time per round trip of one run, "parent/worker" in µs.
func rtCPU(stderr string) string {
	if m := reRTCPU.FindStringSubmatch(stderr); m != nil {
		return m[1] + "/" + m[2]
	}
	return ""
}

func (u *suite) writeControlRounds(b *strings.Builder) {
	keys := u.controlKeys()
	b.WriteString("# round trips of the controls, per round (µs):\n")
	fmt.Fprintf(b, "# %-5s", "round")
	for _, k := range keys {
		fmt.Fprintf(b, " %s", k)
	}
	b.WriteString("\n")
	for r := 1; r <= *u.c.rounds; r++ {
		fmt.Fprintf(b, "# %-5d", r)
		for _, k := range keys {
			fmt.Fprintf(b, " %*s", len(k), u.fig(k, r))
		}
		b.WriteString("\n")
	}
}

func (u *suite) writeRatios(b *strings.Builder) {
	rt, ow := u.medV("ipc-roundtrip-us"), u.medV("ipc-oneway-msgs-per-s")
	b.WriteString("# forkline vs Node (medians):\n")
	fmt.Fprintf(b, "#   round trip: forkline/node latency %sx (below 1: forkline is faster)\n", ratio(rt, u.medV("node-roundtrip-us")))
	fmt.Fprintf(b, "#   one-way:    forkline/node rate %sx\n", ratio(ow, u.medV("node-oneway-msgs-per-s")))
	fmt.Fprintf(b, "#   relay:      forkline relay / node one-way rate %sx (Node's cluster has no worker-to-worker send)\n",
		ratio(u.medV("ipc-relay-msgs-per-s"), u.medV("node-oneway-msgs-per-s")))
	fmt.Fprintf(b, "#   round trip / netpoll floor, median of the per-round ratios: %s\n", u.roundRatios("ipc-roundtrip-us", "floor-netpoll-roundtrip-us"))
	if u.oneCPU {
		fmt.Fprintf(b, "#   on one CPU: round trip / netpoll floor %s\n", u.roundRatios("ipc-roundtrip-one-cpu-us", "floor-netpoll-one-cpu-us"))
		fmt.Fprintf(b, "#               forkline / node round trip %s\n", u.roundRatios("ipc-roundtrip-one-cpu-us", "node-roundtrip-one-cpu-us"))
	}
}

func (u *suite) writeTargets(b *strings.Builder) {
	rtText, rt := u.med("ipc-roundtrip-us")
	owText, ow := u.med("ipc-oneway-msgs-per-s")
	relText, rel := u.med("ipc-relay-msgs-per-s")
	winText, win := u.med("ipc-relay-windowed-msgs-per-s")
	oneCPU := ""
	if u.oneCPU {
		t, v := u.med("ipc-roundtrip-one-cpu-us")
		oneCPU = fmt.Sprintf("(on one CPU: %s us, %s)", t, verdict(v, 20, true))
	}
	var dropped strings.Builder
	for r := 1; r <= *u.c.rounds; r++ {
		fmt.Fprintf(&dropped, "%s ", value(u.out["ipc"][r].stdout, "ipc-relay-dropped"))
	}
	b.WriteString("# targets:\n")
	fmt.Fprintf(b, "#   round trip <= 20 us median: %s us, %s %s\n", rtText, verdict(rt, 20, true), oneCPU)
	fmt.Fprintf(b, "#   one-way >= 1,000,000 msg/s: %s, %s\n", owText, verdict(ow, 1000000, false))
	fmt.Fprintf(b, "#   relay >= 300,000 msg/s:     %s delivered, %s (dropped by the parent, per round: %s)\n", relText, verdict(rel, 300000, false), dropped.String())
	fmt.Fprintf(b, "#                               windowed (lossless) %s, %s\n", winText, verdict(win, 300000, false))
}
