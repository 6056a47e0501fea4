package main

import (
	"fmt"
	"path/filepath"
	"slices"
	"strconv"

	"github.com/forkline/forkline/bench/internal/harness"
)

// setup is one way of running a server.
type setup struct {
	name, label string
	forkline    bool     // under forkline run: its parent logs msg="cluster ready"
	closeOnly   bool     // the server closes every connection: no keepalive load
	oneWorker   bool     // one worker whatever WORKERS says
	tools       []string // commands it needs on PATH
	bins        []string // binaries it runs, built by the suite
	// argv returns the command and the environment it adds.
	argv func(b *bench, addr string) (argv, env []string)
}

var defaultSetups = []string{"run-node", "node-cluster", "gunicorn", "run-gunicorn"}

// setups, in the order of the results table.
var setups = []setup{
	{name: "run-node", label: "forkline run + node server.js (own sockets)", forkline: true, tools: []string{"node"}, bins: []string{"forkline"},
		argv: func(b *bench, addr string) ([]string, []string) {
			return b.forklineRun(addr, b.workers(), "after=300ms", "node", b.file("server.js")), nil
		}},
	{name: "node-cluster", label: "node cluster, SCHED_RR (primary accepts)", tools: []string{"node"},
		argv: func(b *bench, addr string) ([]string, []string) {
			return b.nodeCluster(addr), []string{"NODE_CLUSTER_SCHED_POLICY=rr"}
		}},
	{name: "gunicorn", label: "gunicorn -w N, sync (one shared socket)", closeOnly: true, tools: []string{"gunicorn"},
		argv: func(b *bench, addr string) ([]string, []string) {
			return []string{"gunicorn", "-w", strconv.Itoa(b.workers()), "-k", "sync", "-b", addr, "app:app"}, pythonEnv
		}},
	{name: "run-gunicorn", label: "forkline run + gunicorn -w 1, sync (own sockets)", forkline: true, closeOnly: true,
		tools: []string{"gunicorn"}, bins: []string{"forkline"},
		argv: func(b *bench, addr string) ([]string, []string) {
			// No -b: gunicorn takes fd 3 from LISTEN_FDS and binds nothing.
			return b.forklineRun(addr, b.workers(), "notify", "gunicorn", "-w", "1", "-k", "sync", "app:app"), pythonEnv
		}},
	{name: "run-node-1w", label: "forkline run + node server.js, 1 worker (control)", forkline: true, oneWorker: true,
		tools: []string{"node"}, bins: []string{"forkline"},
		argv: func(b *bench, addr string) ([]string, []string) {
			return b.forklineRun(addr, 1, "after=300ms", "node", b.file("server.js")), nil
		}},
	{name: "node-cluster-none", label: "node cluster, SCHED_NONE (shared socket, control)", tools: []string{"node"},
		argv: func(b *bench, addr string) ([]string, []string) {
			return b.nodeCluster(addr), []string{"NODE_CLUSTER_SCHED_POLICY=none"}
		}},
	{name: "run-go", label: "forkline run + Go net/http on fd 3 (control)", forkline: true, bins: []string{"forkline", "minprefork"},
		argv: func(b *bench, addr string) ([]string, []string) {
			// minprefork's worker side: net/http on fd 3.
			return b.forklineRun(addr, b.workers(), "after=300ms", b.bin("minprefork")), []string{"MINPREFORK_WORKER=1", "GOMAXPROCS=1"}
		}},
}

// pythonEnv keeps gunicorn from writing __pycache__ into the source tree.
var pythonEnv = []string{"PYTHONDONTWRITEBYTECODE=1"}

// binaries are what the setups run, built once per suite run: the module
// (its directory in the repository) and the package.
var binaries = map[string][2]string{
	"forkline":   {"cmd/forkline", "."},
	"minprefork": {"bench", "./peers/minprefork"},
}

// comparison is a ratio the suite reports: a ÷ b under one load, printed
// as line when it has a name.
type comparison struct {
	a, b, load, line string
}

var comparisons = []comparison{
	{a: "run-node", b: "node-cluster", load: "close", line: "run-node-ratio"},
	{a: "run-node", b: "node-cluster", load: "keepalive", line: "run-node-keepalive-ratio"},
	{a: "run-gunicorn", b: "gunicorn", load: "close", line: "run-gunicorn-ratio"},
	{a: "node-cluster-none", b: "node-cluster", load: "close"},
	{a: "node-cluster-none", b: "node-cluster", load: "keepalive"},
	{a: "run-node", b: "node-cluster-none", load: "close"},
	{a: "run-node", b: "node-cluster-none", load: "keepalive"},
	{a: "run-node", b: "run-node-1w", load: "close"},
	{a: "run-node", b: "run-node-1w", load: "keepalive"},
	{a: "run-go", b: "node-cluster", load: "close"},
	{a: "run-go", b: "run-node", load: "close"},
	{a: "run-go", b: "run-node", load: "keepalive"},
}

func setupByName(name string) (*setup, bool) {
	i := slices.IndexFunc(setups, func(s setup) bool { return s.name == name })
	if i < 0 {
		return nil, false
	}
	return &setups[i], true
}

func labelOf(name string) string {
	if s, ok := setupByName(name); ok {
		return s.label
	}
	return name
}

// checkSetups returns the setups named, in order.
func checkSetups(names []string) ([]*setup, error) {
	if len(names) == 0 {
		return nil, fmt.Errorf("no setups")
	}
	var out []*setup
	for _, n := range names {
		s, ok := setupByName(n)
		if !ok {
			return nil, fmt.Errorf("unknown setup %q", n)
		}
		out = append(out, s)
	}
	return out, nil
}

// workers is how many worker processes serve s.
func (s *setup) workersOf(b *bench) int {
	if s.oneWorker {
		return 1
	}
	return b.workers()
}

func (b *bench) workers() int { return *b.c.workers }

func (b *bench) bin(name string) string { return filepath.Join(b.s.Bin(), name) }

// file is a file of this suite's folder (server.js, app.py).
func (b *bench) file(name string) string { return filepath.Join(b.s.Bench, "run", name) }

// forklineRun is `forkline run -workers N -addr ADDR -ready READY -- CMD...`.
func (b *bench) forklineRun(addr string, workers int, ready string, cmd ...string) []string {
	argv := []string{b.bin("forkline"), "run", "-workers", strconv.Itoa(workers), "-addr", addr, "-ready", ready}
	if st := *b.c.steering; st != "" {
		argv = append(argv, "-steering", st)
	}
	return append(append(argv, "--"), cmd...)
}

func (b *bench) nodeCluster(addr string) []string {
	return []string{"node", filepath.Join(b.s.Bench, "peers", "node-cluster.js"), "-addr", addr, "-workers", strconv.Itoa(b.workers())}
}

func pkgOf(s *harness.Suite, bin string) harness.Pkg {
	m := binaries[bin]
	return harness.Pkg{Dir: filepath.Join(s.Root, m[0]), Path: m[1], Out: bin}
}
