// Package exampletest runs an example's binary as a cluster and reads its
// log, for the tests of the examples that are modules of their own
// (examples/fasthttp, examples/grpc, examples/metrics): one harness instead
// of a copy in each.
package exampletest

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

// Build builds this example into a temporary directory, with the
// race detector when the test has it (and then with the packages the test
// build already compiled).
func Build(t *testing.T) string {
	bin := filepath.Join(t.TempDir(), "forkline-example")
	args := []string{"build", "-o", bin}
	if RaceEnabled() {
		args = append(args, "-race")
	}
	out, err := exec.Command("go", append(args, ".")...).CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func RaceEnabled() bool {
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

// Cluster is the example's parent process, and the log of the parent and
// its workers (they share its stderr).
type Cluster struct {
	Cmd    *exec.Cmd
	Exited chan struct{} // closed once the parent has exited

	mu      sync.Mutex
	buf     bytes.Buffer
	next    int           // the log's offset the next WaitLog reads from
	changed chan struct{} // poked on every write; capacity 1
}

func Start(t *testing.T, bin string, args ...string) *Cluster {
	c := &Cluster{Exited: make(chan struct{}), changed: make(chan struct{}, 1)}
	args = append([]string{"-addr", "127.0.0.1:0", "-workers", "2", "-stop-timeout", "10s"}, args...)
	c.Cmd = exec.Command(bin, args...)
	c.Cmd.Stderr = c
	c.Cmd.WaitDelay = 5 * time.Second // workers hold the pipe too
	if err := c.Cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		c.Cmd.Wait()
		close(c.Exited)
	}()
	t.Cleanup(func() { c.Kill() })
	return c
}

func (c *Cluster) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.buf.Write(p)
	c.mu.Unlock()
	select {
	case c.changed <- struct{}{}:
	default:
	}
	return len(p), nil
}

func (c *Cluster) Log() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.String()
}

func (c *Cluster) Logged(pattern string) bool {
	return regexp.MustCompile(pattern).MatchString(c.Log())
}

// WaitLog returns the submatches of the first whole line, past the last
// one WaitLog matched, that matches pattern.
func (c *Cluster) WaitLog(t *testing.T, pattern string) []string {
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
		case <-c.Exited:
			t.Fatalf("the cluster exited while waiting for %q\n%s", pattern, c.Log())
		case <-watchdog:
			t.Fatalf("no %q in 30 s\n%s", pattern, c.Log())
		}
	}
}

// Stop stops the cluster with SIGTERM and waits for its exit status 0.
func (c *Cluster) Stop(t *testing.T) {
	c.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.Exited:
	case <-time.After(20 * time.Second):
		t.Fatalf("the cluster did not stop in 20 s\n%s", c.Log())
	}
	if !c.Cmd.ProcessState.Success() {
		t.Errorf("the cluster exited with %v\n%s", c.Cmd.ProcessState, c.Log())
	}
}

// Kill ends the parent if a test left it running; its workers follow it
// (they see their channel close).
func (c *Cluster) Kill() {
	select {
	case <-c.Exited:
	default:
		c.Cmd.Process.Signal(syscall.SIGKILL)
		<-c.Exited
	}
}
