// Command steer is the suite behind `make bench-steer`: what steering
// (Config.Steering, an SK_REUSEPORT eBPF program in the parent) does for
// requests that the kernel would otherwise queue on a slot nobody accepts
// from, and what it costs a request.
//
// Each fault case runs twice, against a fresh server (steer/server, 2
// workers) with -steering required and with -steering off:
//
//	crashloop   slot 2's worker is killed and its replacements panic at
//	            start: the slot backs off, with no worker
//	stall       slot 2's worker is SIGSTOPped (heartbeats off)
//	disconnect  Cluster.Disconnect(2): the slot is left empty
//
// then N (20) requests, one after the other, each on a fresh connection
// with a 1 s timeout, the way `curl -m1` would; and
//
//	scaledown   slot 2's worker is SIGSTOPped, Q (200) connections are
//	            opened at once with a request each (about half queue on slot
//	            2), then SetWorkers(1): the stopped worker is killed after
//	            its 2 s stop timeout, and what was queued on its socket is
//	            served by worker 1 or lost (tcp_migrate_req=0, the default)
//
// Last, the cost: hello-world throughput with steering on ÷ off, wrk -t1
// -c64, interleaved rounds, keep-alive and with a new connection per
// request (the program runs for every new connection); a second
// steering-off server in the same rounds is the control (off ÷ off: how far
// two identical servers differ on this machine).
//
// Prints one per line:
//
//	steer-crashloop-failed <n> of <m>    nosteer-crashloop-failed <n> of <m>
//	steer-stall-failed <n> of <m>        nosteer-stall-failed <n> of <m>
//	steer-disconnect-failed <n> of <m>   nosteer-disconnect-failed <n> of <m>
//	steer-scaledown-lost <n> of <q>      nosteer-scaledown-lost <n> of <q>
//	steer-throughput-ratio <x>            steer-throughput-control-ratio <x>
//	steer-newconn-throughput-ratio <x>    steer-newconn-throughput-control-ratio <x>
//
// Usage: cd bench && go run ./steer   (make bench-steer; root, or CAP_BPF)
//
// Knobs, as environment variables or as the flags in brackets:
//
//	REQUESTS=20 (-requests)  QUEUED=200 (-queued)  ROUNDS=3 (-rounds)
//	DURATION=5 (-duration, seconds of each wrk run)  CASES="crashloop stall disconnect scaledown" (-cases)
//	RESULTS=steer.md (-results)  KEEP=1 (-keep)
package main

import (
	"fmt"
	"strings"

	"github.com/forkline/forkline/bench/internal/harness"
)

type config struct {
	requests, queued, rounds, seconds *int
	cases                             *string
}

func main() {
	k := harness.NewKnobs("steer", "requests on a slot nobody accepts from, with and without steering")
	c := &config{
		requests: k.Int("requests", "REQUESTS", 20, 1, "requests per fault case, one after the other, 1 s timeout each"),
		queued:   k.Int("queued", "QUEUED", 200, 1, "connections opened at once in the scaledown case"),
		rounds:   k.Int("rounds", "ROUNDS", 3, 1, "interleaved throughput rounds"),
		seconds:  k.Int("duration", "DURATION", 5, 1, "seconds of each wrk run"),
		cases:    k.String("cases", "CASES", "crashloop stall disconnect scaledown", "fault cases"),
	}
	k.Always("requests", "queued", "rounds", "duration")
	harness.Main(k, func(s *harness.Suite) error {
		b, err := newBench(s, c)
		if err != nil {
			return err
		}
		var lines []string
		for _, name := range strings.Fields(*c.cases) {
			for _, steering := range []string{"required", "off"} {
				line, err := b.faultCase(name, steering)
				if err != nil {
					return fmt.Errorf("%s, steering %s: %w", name, steering, err)
				}
				lines = append(lines, line)
			}
		}
		t, err := b.throughput()
		if err != nil {
			return err
		}
		lines = append(lines,
			fmt.Sprintf("steer-throughput-ratio %.3f", t.ratio["keepalive"]),
			fmt.Sprintf("steer-throughput-control-ratio %.3f", t.control["keepalive"]),
			fmt.Sprintf("steer-newconn-throughput-ratio %.3f", t.ratio["newconn"]),
			fmt.Sprintf("steer-newconn-throughput-control-ratio %.3f", t.control["newconn"]))
		text, err := s.WriteResults(b.report(lines, t))
		fmt.Print(text)
		fmt.Println()
		for _, l := range lines {
			fmt.Println(l)
		}
		return err
	})
}
