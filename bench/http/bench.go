package main

import (
	"path/filepath"
	"slices"
	"time"

	"github.com/forkline/forkline/bench/internal/harness"
)

// bench is one run of the suite and what it measured.
type bench struct {
	s     *harness.Suite
	c     *config
	peers []*peer
	res   map[string]*peerRes
	loads []string // load averages: before, after throughput, after startup
}

// peerRes is what one peer measured.
type peerRes struct {
	runs     map[int]*sample // by round
	startups []float64       // ms
}

// newBench checks the peers and the tools they need and builds their
// binaries.
func newBench(s *harness.Suite, c *config, names []string) (*bench, error) {
	ps, err := checkPeers(names)
	if err != nil {
		return nil, err
	}
	b := &bench{s: s, c: c, peers: ps, res: map[string]*peerRes{}}
	tools := []string{"wrk", "go", "ss"}
	if *c.serverCPUs+*c.wrkCPUs != "" {
		tools = append(tools, "taskset")
	}
	var pkgs []harness.Pkg
	for _, p := range ps {
		tools = append(tools, p.tools...)
		for _, bin := range p.bins {
			if !slices.ContainsFunc(pkgs, func(k harness.Pkg) bool { return k.Out == bin }) {
				pkgs = append(pkgs, pkgOf(s, bin))
			}
		}
	}
	if err := s.Need(tools...); err != nil {
		return nil, err
	}
	harness.Logf("building into %s", s.Bin())
	if _, err := s.Build(pkgs...); err != nil {
		return nil, err
	}
	return b, nil
}

func (b *bench) bin(name string) string { return filepath.Join(b.s.Bin(), name) }

func (b *bench) get(name string) *peerRes {
	r := b.res[name]
	if r == nil {
		r = &peerRes{runs: map[int]*sample{}}
		b.res[name] = r
	}
	return r
}

// throughput runs every peer in every round, in interleaved order.
func (b *bench) throughput() error {
	for round := 1; round <= *b.c.rounds; round++ {
		for _, p := range harness.Order(b.peers, round) {
			smp, err := b.measure(p, round)
			if err != nil {
				return err
			}
			b.get(p.name).runs[round] = smp
			harness.Logf("round %d/%d %s: %.0f req/s, parent cpu %.0f ms, other processes %.1f%% of the CPUs",
				round, *b.c.rounds, p.name, smp.wrk.RPS, smp.parentMS, smp.other)
		}
	}
	return nil
}

// startup measures, STARTUP_N times for each peer (interleaved), the time
// from just before exec until the workers have answered.
func (b *bench) startup() error {
	for i := 1; i <= *b.c.startupN; i++ {
		for _, p := range b.peers {
			ms, err := b.startOnce(p)
			if b.s.Ctx.Err() != nil {
				return b.s.Ctx.Err()
			}
			if err != nil {
				harness.Logf("startup sample %d of %s failed: %v", i, p.name, err)
				continue
			}
			b.get(p.name).startups = append(b.get(p.name).startups, ms)
		}
		harness.Logf("startup sample %d/%d done", i, *b.c.startupN)
	}
	return nil
}

// startOnce is one startup sample, in ms.
func (b *bench) startOnce(p *peer) (float64, error) {
	port, err := harness.FreePort()
	if err != nil {
		return 0, err
	}
	spec, err := p.spec(b, port, filepath.Join(b.s.Logs(), "startup."+p.name+".log"))
	if err != nil {
		return 0, err
	}
	sv, err := b.s.Start(spec)
	if err != nil {
		return 0, err
	}
	distinct, _ := p.distinct(*b.c.workers)
	ready, err := harness.WaitDistinct(b.s.Ctx, addrOf(port), distinct, 20*time.Second)
	if serr := sv.Stop(harness.StopBound); err == nil {
		err = serr // a server that had to be killed spoils its sample
	}
	if err != nil {
		return 0, err
	}
	return float64(ready.At.Sub(sv.Started).Microseconds()) / 1000, nil
}
