// Command ipc is the messaging suite behind `make bench-ipc`: forkline's
// messages (bench/ipc/forkline) against Node's cluster (ipc-node.js), each
// with 2 workers, on this machine.
//
// Rounds are interleaved (round 1: forkline then node, round 2: node then
// forkline, ...) so that drift in a noisy machine's load hits both alike.
// It prints the median over the rounds of each figure:
//
//	ipc-roundtrip-us        Request(ctx, 1, 64 B) echoed by worker 1, median µs
//	ipc-oneway-msgs-per-s   worker 1 → parent Send of 64 B, msg/s
//	ipc-relay-msgs-per-s    worker 1 → worker 2 through the parent, msg/s
//	                        delivered (the parent holds worker 1 back while
//	                        worker 2's queue is full; anything lost shows in
//	                        ipc-relay-dropped)
//	node-roundtrip-us       worker.send of a 64-char string echoed, median µs
//	node-oneway-msgs-per-s  process.send of a 64-char string, msg/s
//
// then, after a blank line, the other figures of bench/ipc/forkline, and
// two controls for the round trip, measured in the same rounds:
//
//	floor-netpoll-roundtrip-us   bench/ipc/pingpong: two Go processes that
//	                             bounce one 88-byte frame over a socketpair
//	                             through net.Conn, nothing else: the floor
//	                             for any Go program that waits in the
//	                             runtime's netpoller, as a worker must
//	floor-blocking-roundtrip-us  the same with blocking read(2) (the kernel
//	                             alone; no Go server can wait this way)
//	*-one-cpu-us                 forkline's and Node's round trip and the
//	                             netpoll floor with every process on CPU 0
//	                             (taskset -c 0): no wake-up crosses CPUs.
//	                             On a VM a cross-CPU wake-up of an idle vCPU
//	                             costs tens of µs, and how much varies by
//	                             the hour; on one CPU what is left is the
//	                             software path.
//
// then the figures of every round, the ratios and the targets. The same
// goes to the results file, stamped with the commit, the date and the
// machine.
//
// Usage:  cd bench && go run ./ipc            (make bench-ipc)
//
//	GOMAXPROCS=1 go run ./ipc   (the parent, and the workers, with one P)
//
// Knobs, as environment variables or as the flags in brackets:
//
//	ROUNDS=3 (-rounds)  IPC_FLAGS="" (-ipc-flags, extra flags for bench/ipc/forkline)
//	NODE_FLAGS="" (-node-flags, extra flags for ipc-node.js)  NODE=node (-node)
//	RUN_TIMEOUT=180 (-run-timeout, seconds, bound on each run)
//	RESULTS=ipc.md (-results; in bench/results/, "" = none)
//	KEEP=1 (-keep): keep the temp dir (binaries, raw output of every run)
//
// Every run is a process group of its own, stopped by that group (SIGTERM,
// then SIGKILL) if it outlives RUN_TIMEOUT.
package main

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/forkline/forkline/bench/internal/harness"
)

type config struct {
	rounds, runTimeout            *int
	ipcFlags, nodeFlags, nodePath *string
}

// suite is one run of the suite: the commands, then every run's output.
type suite struct {
	s      *harness.Suite
	c      *config
	ipc    []string // bench/ipc/forkline
	ping   []string // bench/ipc/pingpong
	node   []string // node ipc-node.js
	oneCPU bool     // taskset -c 0 works here
	out    map[string]map[int]runOut
	loads  []string // the 1-minute load average before each round
}

// runOut is one run's stdout and stderr.
type runOut struct{ stdout, stderr string }

func main() {
	k := harness.NewKnobs("ipc", "forkline's messages against Node's cluster, interleaved rounds")
	c := &config{
		rounds:     k.Int("rounds", "ROUNDS", 3, 1, "interleaved rounds"),
		runTimeout: k.Int("run-timeout", "RUN_TIMEOUT", 180, 1, "seconds, bound on each run"),
		ipcFlags:   k.String("ipc-flags", "IPC_FLAGS", "", "extra flags for bench/ipc/forkline"),
		nodeFlags:  k.String("node-flags", "NODE_FLAGS", "", "extra flags for ipc-node.js"),
		nodePath:   k.String("node", "NODE", "node", "the node command"),
	}
	k.Always("rounds")
	harness.Main(k, func(s *harness.Suite) error {
		u, err := setup(s, c)
		if err != nil {
			return err
		}
		if err := u.rounds(); err != nil {
			return err
		}
		return u.finish()
	})
}

func setup(s *harness.Suite, c *config) (*suite, error) {
	if err := s.Need("go", *c.nodePath); err != nil {
		return nil, err
	}
	bins, err := s.Build(harness.Pkg{Dir: s.Bench, Path: "./ipc/forkline", Out: "ipc"},
		harness.Pkg{Dir: s.Bench, Path: "./ipc/pingpong", Out: "pingpong"})
	if err != nil {
		return nil, err
	}
	u := &suite{s: s, c: c, out: map[string]map[int]runOut{}}
	u.ipc = append([]string{bins[0]}, strings.Fields(*c.ipcFlags)...)
	u.ping = []string{bins[1]}
	u.node = append([]string{*c.nodePath, filepath.Join(s.Bench, "ipc", "ipc-node.js")}, strings.Fields(*c.nodeFlags)...)
	u.oneCPU = exec.Command("taskset", "-c", "0", "true").Run() == nil
	if !u.oneCPU {
		harness.Logf("taskset -c 0 is not available: no one-CPU figures")
	}
	return u, nil
}

// rounds runs every round: forkline, node, controls in odd rounds, the
// reverse in even ones.
func (u *suite) rounds() error {
	steps := []func(int) error{u.runIPC, u.runNode, u.runControls}
	for r := 1; r <= *u.c.rounds; r++ {
		load := strings.Fields(harness.LoadAvg())
		u.loads = append(u.loads, load[0])
		for _, step := range harness.Order(steps, r) {
			if err := step(r); err != nil {
				return err
			}
		}
		harness.Logf("round %d/%d done", r, *u.c.rounds)
	}
	return nil
}

// run runs argv to its end as run name of round r.
func (u *suite) run(name string, r int, argv ...string) error {
	stdout, stderr, err := u.s.RunToEnd(name+"."+strconv.Itoa(r), argv, time.Duration(*u.c.runTimeout)*time.Second)
	if err != nil {
		return fmt.Errorf("%s failed in round %d: %w\n%s", name, r, err, stderr)
	}
	if u.out[name] == nil {
		u.out[name] = map[int]runOut{}
	}
	u.out[name][r] = runOut{string(stdout), string(stderr)}
	return nil
}

func (u *suite) runIPC(r int) error  { return u.run("ipc", r, u.ipc...) }
func (u *suite) runNode(r int) error { return u.run("node", r, u.node...) }

// runControls runs the floors, and the round trips on one CPU (short
// floods: only the round trip is read from these runs).
func (u *suite) runControls(r int) error {
	for _, m := range []string{"netpoll", "blocking"} {
		if err := u.run("floor-"+m, r, append(u.ping, "-mode", m)...); err != nil {
			return err
		}
	}
	if !u.oneCPU {
		return nil
	}
	cpu0 := []string{"taskset", "-c", "0"}
	if err := u.run("ipc1", r, join(cpu0, u.ipc, []string{"-oneway", "10000", "-relay", "10000", "-send", "10000"})...); err != nil {
		return err
	}
	if err := u.run("node1", r, join(cpu0, u.node, []string{"-oneway", "10000"})...); err != nil {
		return err
	}
	return u.run("floor1", r, join(cpu0, u.ping, []string{"-mode", "netpoll"})...)
}

func join(parts ...[]string) []string {
	var out []string
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}
