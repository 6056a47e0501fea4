package harness

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// benchModule is the module path of the bench module, by which Main finds
// its directory.
const benchModule = "github.com/forkline/forkline/bench"

// Suite is one run of a benchmark suite.
type Suite struct {
	Name  string
	Ctx   context.Context // ends on SIGINT or SIGTERM
	Bench string          // the bench module's directory
	Root  string          // the repository's root
	Work  string          // the temp dir: bin/, raw/, logs/
	Knobs *Knobs

	mu      sync.Mutex
	servers map[*Server]struct{}
}

// Bin, Raw and Logs are the temp dir's parts.
func (s *Suite) Bin() string  { return filepath.Join(s.Work, "bin") }
func (s *Suite) Raw() string  { return filepath.Join(s.Work, "raw") }
func (s *Suite) Logs() string { return filepath.Join(s.Work, "logs") }

// Main runs a suite: it parses k, sets up the suite, runs fn and then stops
// every server fn left running and removes the temp dir (unless KEEP). It
// exits 2 on bad settings, 1 when fn fails, 130 when interrupted.
func Main(k *Knobs, fn func(*Suite) error) {
	if err := k.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintf(os.Stderr, "%s: %v\n", k.suite, err)
		os.Exit(2)
	}
	s, err := newSuite(k)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", k.suite, err)
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	s.Ctx = ctx
	err = fn(s)
	interrupted := ctx.Err() != nil
	stop()
	s.StopAll()
	if *k.keep {
		Logf("raw data kept in %s", s.Work)
	} else {
		os.RemoveAll(s.Work)
	}
	switch {
	case interrupted:
		fmt.Fprintf(os.Stderr, "%s: interrupted\n", k.suite)
		os.Exit(130)
	case err != nil:
		fmt.Fprintf(os.Stderr, "%s: %v\n", k.suite, err)
		os.Exit(1)
	}
}

func newSuite(k *Knobs) (*Suite, error) {
	bench, err := findBench()
	if err != nil {
		return nil, err
	}
	work, err := os.MkdirTemp("", "forkline-"+k.suite+".")
	if err != nil {
		return nil, err
	}
	// nginx's workers may run as another user and read their config here.
	if err := os.Chmod(work, 0o755); err != nil {
		return nil, err
	}
	s := &Suite{Name: k.suite, Bench: bench, Root: filepath.Dir(bench), Work: work, Knobs: k, servers: map[*Server]struct{}{}}
	for _, d := range []string{s.Bin(), s.Raw(), s.Logs()} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// findBench walks up from the working directory to the bench module's
// go.mod, so that a suite runs from bench/ or from anywhere below it.
func findBench() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.HasPrefix(bytes.TrimSpace(b), []byte("module "+benchModule+"\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("not inside the bench module: run from bench/ (cd bench && go run ./<suite>)")
		}
		dir = parent
	}
}

// Pkg is a binary under test: the package Path built in the module at Dir
// into Out in the suite's bin/.
type Pkg struct{ Dir, Path, Out string }

// Build builds the packages into bin/ (one go build each: they may belong
// to different modules) and returns their paths, in order.
func (s *Suite) Build(pkgs ...Pkg) ([]string, error) {
	out := make([]string, len(pkgs))
	for i, p := range pkgs {
		out[i] = filepath.Join(s.Bin(), p.Out)
		cmd := exec.CommandContext(s.Ctx, "go", "build", "-o", out[i], p.Path)
		cmd.Dir = p.Dir
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return nil, fmt.Errorf("go build %s (in %s): %w", p.Path, p.Dir, err)
		}
	}
	return out, nil
}

// Logf writes a timestamped line to stderr, as the scripts' log did.
func Logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// Tail returns the last n lines of a file, for an error message.
func Tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
