package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

type config struct {
	duration  time.Duration
	seed      uint64
	closers   int
	keepAlive int
	timeout   time.Duration
	workers   int
	heartbeat time.Duration
	maxFaults int
	root      string // the repository: where bench/results goes
	src       string // the tree examples/hello is built from
	out       string
	keepLog   string
}

func parseFlags() config {
	var c config
	flag.DurationVar(&c.duration, "duration", 60*time.Second, "how long the clients run, parent restart included")
	flag.Uint64Var(&c.seed, "seed", 0, "seed of the fault schedule (0: from the clock; printed, to replay)")
	flag.IntVar(&c.closers, "close-clients", 32, "clients that open a new connection per request")
	flag.IntVar(&c.keepAlive, "keepalive-clients", 16, "keep-alive clients")
	flag.DurationVar(&c.timeout, "timeout", 5*time.Second, "bound on each request, connect included")
	flag.IntVar(&c.workers, "workers", 2, "workers to start with")
	flag.DurationVar(&c.heartbeat, "heartbeat-timeout", 2*time.Second, "the server's -heartbeat-timeout (0: off)")
	flag.IntVar(&c.maxFaults, "max-faults", 200, "bound on the number of faults")
	flag.StringVar(&c.root, "root", "", "repository root (default: the module github.com/forkline/forkline resolves to)")
	flag.StringVar(&c.src, "src", "", "tree to build examples/hello from (default: -root)")
	flag.StringVar(&c.out, "out", "", "report file (default: <root>/bench/results/soak.md)")
	flag.StringVar(&c.keepLog, "log", "", "also write the parents' full logs to this file")
	flag.Parse()
	if c.seed == 0 {
		c.seed = uint64(time.Now().UnixNano())
	}
	return c
}

// findRoot asks the go command where the root module is (bench/go.mod
// replaces it with ../).
func findRoot() (string, error) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/forkline/forkline").Output()
	if err != nil {
		return "", fmt.Errorf("go list -m github.com/forkline/forkline: %w (pass -root)", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// build compiles examples/hello from src into dir.
func build(src, dir string) (string, error) {
	bin := filepath.Join(dir, "hello")
	cmd := exec.Command("go", "build", "-o", bin, "./examples/hello")
	cmd.Dir = src
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./examples/hello in %s: %w\n%s", src, err, out)
	}
	return bin, nil
}

// freePort binds 127.0.0.1:0 and closes it: port 0 cannot be passed to
// the server, because the restarted parent must bind the same port.
func freePort() (int, error) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// stamp describes what was measured, where and when.
type stamp struct {
	commit, date, kernel, goVersion string
	cpus                            int
}

func makeStamp(src string) stamp {
	s := stamp{
		commit:    "unknown",
		date:      time.Now().UTC().Format("2006-01-02 15:04:05 UTC"),
		goVersion: runtime.Version(),
		cpus:      runtime.NumCPU(),
	}
	if k, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		s.kernel = "Linux " + strings.TrimSpace(string(k))
	}
	if out, err := exec.Command("git", "-C", src, "rev-parse", "--short", "HEAD").Output(); err == nil {
		s.commit = strings.TrimSpace(string(out))
		// --no-optional-locks: status must not refresh (write) the index.
		st, err := exec.Command("git", "-C", src, "--no-optional-locks", "status", "--porcelain").Output()
		if err != nil || len(strings.TrimSpace(string(st))) > 0 {
			s.commit += "-dirty"
		}
	}
	return s
}

func (c *config) resolve() error {
	if c.root == "" {
		r, err := findRoot()
		if err != nil {
			return err
		}
		c.root = r
	}
	if c.src == "" {
		c.src = c.root
	}
	if c.out == "" {
		c.out = filepath.Join(c.root, "bench", "results", "soak.md")
	}
	switch {
	case c.duration < 10*time.Second:
		return errors.New("-duration must be at least 10s (faults, then the parent restart)")
	case c.workers < 1 || c.workers > 4:
		return errors.New("-workers must be 1..4 (scaling keeps the count within 1..4)")
	}
	return nil
}
