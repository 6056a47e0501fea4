package main

// The harness that runs the example's binary as a cluster, and reads its
// log. examples/fasthttp and examples/grpc have the same file: each
// example is a module of its own, and forkline's root module exports no
// test helpers.

import (
	"bytes"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"sync"
	"syscall"
	"testing"
	"time"
)

// buildExample builds this example into a temporary directory, with the
// race detector when the test has it (and then with the packages the test
// build already compiled).
func buildExample(t *testing.T) string {
	bin := filepath.Join(t.TempDir(), "forkline-example")
	args := []string{"build", "-o", bin}
	if raceEnabled() {
		args = append(args, "-race")
	}
	out, err := exec.Command("go", append(args, ".")...).CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func raceEnabled() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" && s.Value == "true" {
			return true
		}
	}
	return false
}

// cluster is the example's parent process, and the log of the parent and
// its workers (they share its stderr).
type cluster struct {
	cmd    *exec.Cmd
	exited chan struct{}

	mu      sync.Mutex
	buf     bytes.Buffer
	next    int           // the log's offset the next waitLog reads from
	changed chan struct{} // poked on every write; capacity 1
}

func startCluster(t *testing.T, bin string, args ...string) *cluster {
	c := &cluster{exited: make(chan struct{}), changed: make(chan struct{}, 1)}
	args = append([]string{"-addr", "127.0.0.1:0", "-workers", "2", "-stop-timeout", "10s"}, args...)
	c.cmd = exec.Command(bin, args...)
	c.cmd.Stderr = c
	c.cmd.WaitDelay = 5 * time.Second // workers hold the pipe too
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		c.cmd.Wait()
		close(c.exited)
	}()
	t.Cleanup(func() { c.kill() })
	return c
}

func (c *cluster) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.buf.Write(p)
	c.mu.Unlock()
	select {
	case c.changed <- struct{}{}:
	default:
	}
	return len(p), nil
}

func (c *cluster) log() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.String()
}

func (c *cluster) logged(pattern string) bool {
	return regexp.MustCompile(pattern).MatchString(c.log())
}

// waitLog returns the submatches of the first whole line, past the last
// one waitLog matched, that matches pattern.
func (c *cluster) waitLog(t *testing.T, pattern string) []string {
	t.Helper()
	re := regexp.MustCompile(`(?m)^.*` + pattern + `.*\n`)
	watchdog := time.After(30 * time.Second)
	for {
		c.mu.Lock()
		rest := c.buf.Bytes()[c.next:]
		loc := re.FindSubmatchIndex(rest)
		var m []string
		if loc != nil {
			for i := 0; i < len(loc); i += 2 {
				if loc[i] >= 0 {
					m = append(m, string(rest[loc[i]:loc[i+1]]))
				} else {
					m = append(m, "")
				}
			}
			c.next += loc[1]
		}
		c.mu.Unlock()
		if m != nil {
			return m
		}
		select {
		case <-c.changed:
		case <-c.exited:
			t.Fatalf("the cluster exited while waiting for %q\n%s", pattern, c.log())
		case <-watchdog:
			t.Fatalf("no %q in 30 s\n%s", pattern, c.log())
		}
	}
}

// stop stops the cluster with SIGTERM and waits for its exit status 0.
func (c *cluster) stop(t *testing.T) {
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(20 * time.Second):
		t.Fatalf("the cluster did not stop in 20 s\n%s", c.log())
	}
	if !c.cmd.ProcessState.Success() {
		t.Errorf("the cluster exited with %v\n%s", c.cmd.ProcessState, c.log())
	}
}

// kill ends the parent if a test left it running; its workers follow it
// (they see their channel close).
func (c *cluster) kill() {
	select {
	case <-c.exited:
	default:
		c.cmd.Process.Signal(syscall.SIGKILL)
		<-c.exited
	}
}
