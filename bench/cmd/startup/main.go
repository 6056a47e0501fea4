// Command startup measures, from outside, how long a prefork server takes
// from exec until all of its workers serve requests.
//
// It starts the command in its own process group, then keeps opening fresh
// connections to -addr, sending one "GET /" per connection and reading the
// pid from the hello body ("Hello from worker=<id> pid=<pid> gen=<n>") until
// -distinct different pids have answered. The time from just before exec to
// that response is one sample. It then sends SIGTERM to the process group,
// waits for it to empty (SIGKILL after -stop-timeout) and repeats -n times.
// Samples are printed one per line, in milliseconds.
//
// Every loop is bounded in count and in time. A failed connection is retried
// after -retry (2ms), a successful probe after 1ms, so the probing itself
// takes little CPU away from the processes it is waiting for.
//
// Usage:
//
//	startup [-addr 127.0.0.1:0] [-n 1] [-distinct 2] -- cmd args...
//	startup -addr 127.0.0.1:8080 -distinct 2        # no command: wait until ready
//
// An argument "{addr}" in the command is replaced by the address probed;
// with port 0 a free port is picked for each sample.
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "address to probe; port 0 = pick a free port per sample (needs {addr} in the command)")
	n := flag.Int("n", 1, "number of samples")
	distinct := flag.Int("distinct", 2, "number of distinct worker pids that must answer")
	timeout := flag.Duration("timeout", 20*time.Second, "bound for one sample")
	maxProbes := flag.Int("max-probes", 100000, "bound on probes per sample")
	retry := flag.Duration("retry", 2*time.Millisecond, "pause after a failed probe")
	stopTimeout := flag.Duration("stop-timeout", 10*time.Second, "after SIGTERM, SIGKILL the process group when it has not exited within this")
	logPath := flag.String("log", os.DevNull, "file that receives the command's stdout and stderr")
	flag.Parse()

	p := prober{distinct: *distinct, timeout: *timeout, maxProbes: *maxProbes, retry: *retry}
	if flag.NArg() == 0 {
		// Readiness mode: the server is already started by someone else.
		d, probes, err := p.wait(*addr, time.Now())
		if err != nil {
			fmt.Fprintf(os.Stderr, "startup: %v after %d probes\n", err, probes)
			os.Exit(1)
		}
		fmt.Printf("%.1f\n", ms(d))
		return
	}

	logf, err := os.OpenFile(*logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		fmt.Fprintln(os.Stderr, "startup:", err)
		os.Exit(1)
	}
	defer logf.Close()

	// On SIGINT or SIGTERM, stop the process group being measured before
	// exiting: Pdeathsig reaches only its leader, and not every server's
	// workers follow their leader (nginx's do not).
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sigs
		if pgid := int(current.Load()); pgid > 0 {
			_ = syscall.Kill(-pgid, syscall.SIGTERM)
			for i := 0; i < 200 && syscall.Kill(-pgid, 0) == nil; i++ {
				time.Sleep(10 * time.Millisecond)
			}
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
		}
		os.Exit(130)
	}()

	for i := 0; i < *n; i++ {
		a := *addr
		if strings.HasSuffix(a, ":0") {
			if a, err = freeAddr(a); err != nil {
				fmt.Fprintln(os.Stderr, "startup:", err)
				os.Exit(1)
			}
		}
		d, probes, err := sample(p, a, flag.Args(), logf, *stopTimeout)
		if err != nil {
			fmt.Fprintf(os.Stderr, "startup: sample %d: %v (%d probes)\n", i+1, err, probes)
			os.Exit(1)
		}
		fmt.Printf("%.1f\n", ms(d))
	}
}

// current is the process group being measured, 0 if none.
var current atomic.Int64

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// sample starts one instance of the command, measures it and stops it.
func sample(p prober, addr string, argv []string, logf *os.File, stopTimeout time.Duration) (time.Duration, int, error) {
	args := make([]string, len(argv))
	for i, a := range argv {
		args[i] = strings.ReplaceAll(a, "{addr}", addr)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Own process group, so that SIGTERM reaches the workers too and nothing
	// else; SIGKILL the leader if this program dies first.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}

	start := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, 0, err
	}
	current.Store(int64(cmd.Process.Pid))
	defer current.Store(0)
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	d, probes, err := p.wait(addr, start)
	if stopErr := stopGroup(cmd.Process.Pid, exited, stopTimeout); stopErr != nil {
		err = errors.Join(err, stopErr)
	}
	return d, probes, err
}

// stopGroup sends SIGTERM to the process group pgid, waits for its leader to
// exit and the group to empty, and uses SIGKILL once stopTimeout has passed.
func stopGroup(pgid int, exited <-chan error, stopTimeout time.Duration) error {
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	deadline := time.Now().Add(stopTimeout)
	var err error
	select {
	case <-exited:
	case <-time.After(stopTimeout):
		err = fmt.Errorf("process group %d still running %v after SIGTERM; killed", pgid, stopTimeout)
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-exited
	}
	// The workers may outlive the leader by a little; wait for the group.
	for syscall.Kill(-pgid, 0) == nil {
		if time.Now().After(deadline) {
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			if err == nil {
				err = fmt.Errorf("workers of process group %d still running %v after SIGTERM; killed", pgid, stopTimeout)
			}
			deadline = time.Now().Add(2 * time.Second)
			for syscall.Kill(-pgid, 0) == nil && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	return err
}

// freeAddr returns host:port with a port that was free a moment ago.
func freeAddr(addr string) (string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

type prober struct {
	distinct  int
	timeout   time.Duration
	maxProbes int
	retry     time.Duration
}

// wait probes addr until p.distinct pids have answered, and returns the time
// since start at the last new pid, and the number of probes.
func (p prober) wait(addr string, start time.Time) (time.Duration, int, error) {
	seen := make(map[int]bool)
	deadline := start.Add(p.timeout)
	var lastErr error
	for probes := 1; probes <= p.maxProbes; probes++ {
		if time.Now().After(deadline) {
			return 0, probes - 1, fmt.Errorf("timeout after %v, %d of %d pids seen, last error: %v", p.timeout, len(seen), p.distinct, lastErr)
		}
		pid, err := probe(addr)
		if err != nil {
			lastErr = err
			time.Sleep(p.retry)
			continue
		}
		if !seen[pid] {
			seen[pid] = true
			if len(seen) >= p.distinct {
				return time.Since(start), probes, nil
			}
		}
		time.Sleep(time.Millisecond)
	}
	return 0, p.maxProbes, fmt.Errorf("gave up after %d probes, %d of %d pids seen, last error: %v", p.maxProbes, len(seen), p.distinct, lastErr)
}

// probe sends one request on a fresh connection and returns the pid named in
// the response body.
func probe(addr string) (int, error) {
	c, err := net.DialTimeout("tcp", addr, 500*time.Millisecond)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(2 * time.Second)); err != nil {
		return 0, err
	}
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"); err != nil {
		return 0, err
	}
	resp, err := io.ReadAll(io.LimitReader(c, 8<<10))
	if err != nil && len(resp) == 0 {
		return 0, err
	}
	if !bytes.HasPrefix(resp, []byte("HTTP/1.1 200")) {
		line, _, _ := bytes.Cut(resp, []byte("\r\n"))
		return 0, fmt.Errorf("unexpected response %q", line)
	}
	_, rest, ok := bytes.Cut(resp, []byte(" pid="))
	if !ok {
		return 0, errors.New("no pid= in the response body")
	}
	end := bytes.IndexFunc(rest, func(r rune) bool { return r < '0' || r > '9' })
	if end < 0 {
		end = len(rest)
	}
	pid, err := strconv.Atoi(string(rest[:end]))
	if err != nil {
		return 0, fmt.Errorf("bad pid in response: %w", err)
	}
	return pid, nil
}
