package main

import (
	"fmt"
	"path/filepath"
	"slices"
	"strconv"

	"github.com/forkline/forkline/bench/internal/harness"
)

// peer is one server of the suite.
type peer struct {
	name, label string
	baseline    string   // the peer it is compared with; "" = none
	single      bool     // one process serves: no parent/worker split
	oneWorker   bool     // a prefork with one worker
	bins        []string // binaries it runs, from binaries
	tools       []string // commands it needs on PATH
	// argv returns the command and the environment it adds.
	argv func(b *bench, addr string, port int) ([]string, []string, error)
}

var defaultPeers = []string{"nethttp", "forkline-nethttp", "forkline-nethttp-1w", "minprefork",
	"fasthttp-prefork", "forkline-fasthttp", "nginx", "node-cluster"}

// peers, in the order of the results table.
var peers = []peer{
	{name: "nethttp", label: "net/http, 1 process", single: true, bins: []string{"nethttp"}, argv: plain("nethttp")},
	{name: "nethttp-tcp", label: "net/http, 1 process, plain TCP (control)", baseline: "nethttp", single: true,
		bins: []string{"nethttp"}, argv: withEnv(plain("nethttp"), "GODEBUG=multipathtcp=0")},
	{name: "forkline-nethttp", label: "forkline + net/http", baseline: "nethttp", bins: []string{"forkline-nethttp"}, argv: forkline("forkline-nethttp", 0)},
	{name: "forkline-nethttp-2p", label: "forkline + net/http, 2 Ps per worker", baseline: "nethttp",
		bins: []string{"forkline-nethttp"}, argv: withEnv(forkline("forkline-nethttp", 0), "GOMAXPROCS=2")},
	{name: "forkline-nethttp-1w", label: "forkline + net/http, 1 worker (control)", baseline: "nethttp", oneWorker: true,
		bins: []string{"forkline-nethttp"}, argv: forkline("forkline-nethttp", 1)},
	{name: "minprefork", label: "minimal prefork + net/http (control)", baseline: "nethttp", bins: []string{"minprefork"}, argv: prefork("minprefork")},
	{name: "fasthttp-prefork", label: "fasthttp/prefork (reuseport)", bins: []string{"fasthttpprefork"}, argv: prefork("fasthttpprefork")},
	{name: "forkline-fasthttp", label: "forkline + fasthttp", baseline: "fasthttp-prefork", bins: []string{"forkline-fasthttp"}, argv: forkline("forkline-fasthttp", 0)},
	{name: "nginx", label: "nginx (reuseport), reference", baseline: "nethttp", tools: []string{"nginx"}, argv: nginx},
	{name: "node-cluster", label: "Node cluster (rr), reference", baseline: "nethttp", tools: []string{"node"}, argv: node},
}

// binaries are what the peers run, built once per suite run: the module
// (its directory in the repository) and the package.
var binaries = map[string][2]string{
	"nethttp":           {"bench", "./peers/nethttp"},
	"fasthttpprefork":   {"bench", "./peers/fasthttpprefork"},
	"minprefork":        {"bench", "./peers/minprefork"},
	"forkline-nethttp":  {".", "./examples/hello"},
	"forkline-fasthttp": {"examples/fasthttp", "."},
}

func pkgOf(s *harness.Suite, bin string) harness.Pkg {
	m := binaries[bin]
	return harness.Pkg{Dir: filepath.Join(s.Root, m[0]), Path: m[1], Out: bin}
}

func peerByName(name string) (*peer, bool) {
	i := slices.IndexFunc(peers, func(p peer) bool { return p.name == name })
	if i < 0 {
		return nil, false
	}
	return &peers[i], true
}

func labelOf(name string) string {
	if p, ok := peerByName(name); ok {
		return p.label
	}
	return name
}

// distinct is how many worker pids must answer for the peer to be ready,
// and children how many worker processes it should have (0: it serves
// itself).
func (p *peer) distinct(workers int) (distinct, children int) {
	switch {
	case p.single:
		return 1, 0
	case p.oneWorker:
		return 1, 1
	}
	return workers, workers
}

// spec is how to start p on port, its output appended to log.
func (p *peer) spec(b *bench, port int, log string) (harness.Spec, error) {
	addr := "127.0.0.1:" + strconv.Itoa(port)
	argv, env, err := p.argv(b, addr, port)
	if err != nil {
		return harness.Spec{}, err
	}
	if cpus := *b.c.serverCPUs; cpus != "" {
		argv = append([]string{"taskset", "-c", cpus}, argv...) // taskset execs in place: same pid
	}
	return harness.Spec{Name: p.name, Argv: argv, Env: env, Log: log}, nil
}

type argvFunc = func(b *bench, addr string, port int) ([]string, []string, error)

func plain(bin string) argvFunc {
	return func(b *bench, addr string, _ int) ([]string, []string, error) {
		return []string{b.bin(bin), "-addr", addr}, nil, nil
	}
}

func prefork(bin string) argvFunc {
	return func(b *bench, addr string, _ int) ([]string, []string, error) {
		return []string{b.bin(bin), "-addr", addr, "-workers", strconv.Itoa(*b.c.workers)}, nil, nil
	}
}

// forkline runs a forkline example with workers workers (0: WORKERS).
func forkline(bin string, workers int) argvFunc {
	return func(b *bench, addr string, _ int) ([]string, []string, error) {
		n := workers
		if n == 0 {
			n = *b.c.workers
		}
		return []string{b.bin(bin), "-addr", addr, "-workers", strconv.Itoa(n), "-mode", *b.c.mode}, nil, nil
	}
}

func withEnv(f argvFunc, env ...string) argvFunc {
	return func(b *bench, addr string, port int) ([]string, []string, error) {
		argv, e, err := f(b, addr, port)
		return argv, append(e, env...), err
	}
}

func nginx(b *bench, _ string, port int) ([]string, []string, error) {
	n := harness.Nginx{Dir: filepath.Join(b.s.Work, "nginx", strconv.Itoa(port)), Port: port, Workers: *b.c.workers,
		Extra: []string{"keepalive_requests 1000000"}}
	argv, err := n.Write()
	return argv, nil, err
}

func node(b *bench, addr string, _ int) ([]string, []string, error) {
	js := filepath.Join(b.s.Bench, "peers", "node-cluster.js")
	return []string{"node", js, "-addr", addr, "-workers", strconv.Itoa(*b.c.workers)}, nil, nil
}

// checkPeers returns the peers named, in order.
func checkPeers(names []string) ([]*peer, error) {
	if len(names) == 0 {
		return nil, fmt.Errorf("no peers")
	}
	var out []*peer
	for _, n := range names {
		p, ok := peerByName(n)
		if !ok {
			return nil, fmt.Errorf("unknown peer %q", n)
		}
		out = append(out, p)
	}
	return out, nil
}
