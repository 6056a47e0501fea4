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

var knownRuns = []string{"forkline", "keepalive", "nginx"}

func checkRuns(runs []string) error {
	for _, r := range runs {
		if !slices.Contains(knownRuns, r) {
			return fmt.Errorf("unknown run %q (want some of: %s)", r, strings.Join(knownRuns, " "))
		}
	}
	return nil
}

// suite is one run of the suite.
type suite struct {
	s        *harness.Suite
	c        *config
	runs     []string
	hello    string
	kv       map[string]map[string]string // by run, key
	reports  map[string]string            // by run
	failures int
}

func setup(s *harness.Suite, c *config, runs []string) (*suite, error) {
	tools := []string{"go"}
	if slices.Contains(runs, "nginx") {
		tools = append(tools, "nginx")
	}
	if err := s.Need(tools...); err != nil {
		return nil, err
	}
	harness.Logf("building examples/hello")
	bins, err := s.Build(harness.Pkg{Dir: s.Root, Path: "./examples/hello", Out: "hello"})
	if err != nil {
		return nil, err
	}
	return &suite{s: s, c: c, runs: runs, hello: bins[0], kv: map[string]map[string]string{}, reports: map[string]string{}}, nil
}

// run is one server and one measurement against it.
func (u *suite) run(name string) error {
	port, err := harness.FreePort()
	if err != nil {
		return err
	}
	loadBefore := harness.LoadAvg()
	o := u.c.base
	o.addr = "127.0.0.1:" + strconv.Itoa(port)
	sv, err := u.start(name, port, &o)
	if err != nil {
		return err
	}
	harness.Logf("%s: pid %d on %s", name, sv.Pid, o.addr)
	var kv, report bytes.Buffer
	res, runErr := measure(u.s.Ctx, o)
	if res != nil {
		res.report(&kv, &report, o)
	}
	if err := sv.Stop(harness.StopBound); err != nil {
		harness.Logf("%v", err)
	}
	if runErr != nil {
		fmt.Fprintf(&report, "failed: %v\n", runErr)
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

// start starts the server of run name and sets how o reloads it.
func (u *suite) start(name string, port int, o *options) (*harness.Server, error) {
	if name == "nginx" {
		n := harness.Nginx{Dir: filepath.Join(u.s.Work, "nginx"), Port: port, Workers: *u.c.workers, LogLevel: "notice"}
		argv, err := n.Write()
		if err != nil {
			return nil, err
		}
		o.cmd = n.ReloadCommand()
		sv, err := u.s.Start(harness.Spec{Name: name, Argv: argv, Log: filepath.Join(u.s.Raw(), "nginx.server.log")})
		if err == nil {
			o.pid = sv.Pid
		}
		return sv, err
	}
	o.keepAlive = name == "keepalive"
	o.logPath, o.ready = filepath.Join(u.s.Raw(), name+".server.log"), "msg=reloaded"
	sv, err := u.s.Start(harness.Spec{Name: name, Log: o.logPath,
		Argv: []string{u.hello, "-addr", o.addr, "-workers", strconv.Itoa(*u.c.workers)}})
	if err == nil {
		o.pid = sv.Pid
	}
	return sv, err
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
	return b.String()
}
