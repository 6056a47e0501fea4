package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/forkline/forkline/bench/internal/harness"
)

var knownRuns = []string{"fresh", "keepalive"}

func checkRuns(runs []string) error {
	for _, r := range runs {
		if !slices.Contains(knownRuns, r) {
			return fmt.Errorf("unknown run %q (want some of: %s)", r, strings.Join(knownRuns, " "))
		}
	}
	if len(runs) == 0 {
		return fmt.Errorf("no runs (want some of: %s)", strings.Join(knownRuns, " "))
	}
	return nil
}

// suite is one run of the suite.
type suite struct {
	s        *harness.Suite
	c        *config
	runs     []string
	builds   []build // a, b
	kv       map[string]map[string]string
	reports  map[string]string
	deploys  map[string]string // the path each run's parent ran from
	failures int
}

func setup(s *harness.Suite, c *config, runs []string) (*suite, error) {
	if err := s.Need("go"); err != nil {
		return nil, err
	}
	harness.Logf("building examples/hello")
	bins, err := s.Build(harness.Pkg{Dir: s.Root, Path: "./examples/hello", Out: "hello"})
	if err != nil {
		return nil, err
	}
	builds, err := makeBuilds(bins[0])
	if err != nil {
		return nil, err
	}
	return &suite{s: s, c: c, runs: runs, builds: builds, kv: map[string]map[string]string{},
		reports: map[string]string{}, deploys: map[string]string{}}, nil
}

// run is one server and one measurement against it.
func (u *suite) run(name string) error {
	port, err := harness.FreePort()
	if err != nil {
		return err
	}
	dep, err := newDeploy(filepath.Join(u.s.Work, "deploy-"+name))
	if err != nil {
		return err
	}
	if _, _, err := dep.install(u.builds[0]); err != nil {
		return err
	}
	u.deploys[name] = dep.path
	loadBefore := harness.LoadAvg()
	o := u.c.base
	o.addr = "127.0.0.1:" + strconv.Itoa(port)
	o.keepAlive = name == "keepalive"
	o.logPath = filepath.Join(u.s.Raw(), name+".server.log")
	sv, err := u.s.Start(harness.Spec{Name: name, Log: o.logPath,
		Argv: []string{dep.path, "-addr", o.addr, "-workers", strconv.Itoa(o.workers)}})
	if err != nil {
		return err
	}
	o.pid = sv.Pid
	harness.Logf("%s: pid %d on %s, running %s (build a)", name, sv.Pid, o.addr, dep.path)
	var kv, report bytes.Buffer
	res, runErr := measure(u.s.Ctx, o, dep, u.builds, sv.Exited())
	if res != nil {
		res.report(&kv, &report, o)
	}
	if err := sv.Stop(harness.StopBound); err != nil {
		harness.Logf("%v", err)
	}
	if runErr != nil {
		fmt.Fprintf(&report, "failed: %v\n", runErr)
		fmt.Fprintf(&report, "  the server's log, last lines:\n%s\n", indent(harness.Tail(o.logPath, 30), "    "))
		harness.Logf("%s: %v", name, runErr)
		u.failures++
	}
	fmt.Fprintf(&report, "  load average (1/5/15 min): before %s, after %s\n", loadBefore, harness.LoadAvg())
	u.kv[name] = parseKV(kv.String())
	u.reports[name] = report.String()
	os.Stderr.WriteString(indent(report.String(), "    "))
	_ = os.WriteFile(filepath.Join(u.s.Raw(), name+".kv"), kv.Bytes(), 0o644)
	return u.s.Ctx.Err()
}

func parseKV(s string) map[string]string {
	m := map[string]string{}
	for line := range strings.Lines(s) {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), " "); ok {
			m[k] = v
		}
	}
	return m
}

func indent(s, prefix string) string {
	var b strings.Builder
	for line := range strings.Lines(s) {
		b.WriteString(prefix + line)
	}
	if s != "" && !strings.HasSuffix(s, "\n") {
		b.WriteString("\n")
	}
	return b.String()
}
