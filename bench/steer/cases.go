package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/forkline/forkline/bench/internal/harness"
)

type bench struct {
	s      *harness.Suite
	c      *config
	server string // the binary
	n      int    // servers started
}

func newBench(s *harness.Suite, c *config) (*bench, error) {
	bins, err := s.Build(harness.Pkg{Dir: s.Bench, Path: "./steer/server", Out: "steer-server"})
	if err != nil {
		return nil, err
	}
	return &bench{s: s, c: c, server: bins[0]}, nil
}

// cluster is one running server.
type cluster struct {
	*harness.Server
	addr, fifo, marker string
	pids               map[int]int // worker id -> pid
}

func (b *bench) start(steering string) (*cluster, error) {
	b.n++
	port, err := harness.FreePort()
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(b.s.Work, fmt.Sprintf("server%d", b.n))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	cl := &cluster{addr: fmt.Sprintf("127.0.0.1:%d", port), fifo: filepath.Join(dir, "control"), marker: filepath.Join(dir, "crash")}
	if err := syscall.Mkfifo(cl.fifo, 0o600); err != nil {
		return nil, err
	}
	cl.Server, err = b.s.Start(harness.Spec{
		Name: fmt.Sprintf("steer-%s-%d", steering, b.n),
		Argv: []string{b.server, "-addr", cl.addr, "-workers", "2", "-steering", steering, "-control", cl.fifo, "-crash-marker", cl.marker},
	})
	if err != nil {
		return nil, err
	}
	if _, err := harness.WaitDistinct(b.s.Ctx, cl.addr, 2, 15*time.Second); err != nil {
		return nil, err
	}
	cl.pids, err = workerPIDs(cl.addr)
	return cl, err
}

// workerPIDs asks until both workers have answered.
func workerPIDs(addr string) (map[int]int, error) {
	pids := map[int]int{}
	for i := 0; i < 1000 && len(pids) < 2; i++ {
		id, pid, err := hello(addr, time.Second)
		if err == nil {
			pids[id] = pid
		}
	}
	if len(pids) < 2 {
		return nil, fmt.Errorf("only workers %v answered", pids)
	}
	return pids, nil
}

// command writes one line to the server's control FIFO.
func (cl *cluster) command(line string) error {
	f, err := os.OpenFile(cl.fifo, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = fmt.Fprintln(f, line)
	return err
}

// faultCase runs one case against a fresh server and returns its line.
func (b *bench) faultCase(name, steering string) (string, error) {
	cl, err := b.start(steering)
	if err != nil {
		return "", err
	}
	defer cl.Stop(harness.StopBound)
	prefix := "steer"
	if steering == "off" {
		prefix = "nosteer"
	}
	victim := cl.pids[2]
	switch name {
	case "crashloop":
		if err := os.WriteFile(cl.marker, nil, 0o644); err != nil {
			return "", err
		}
		syscall.Kill(victim, syscall.SIGKILL)
		if err := waitLog(b.s, cl, "backing off before replacing worker"); err != nil {
			return "", err
		}
	case "stall":
		syscall.Kill(victim, syscall.SIGSTOP)
		defer syscall.Kill(victim, syscall.SIGCONT)
	case "disconnect":
		if err := cl.command("disconnect 2"); err != nil {
			return "", err
		}
	case "scaledown":
		lost, n, err := b.scaleDown(cl, victim)
		return fmt.Sprintf("%s-scaledown-lost %d of %d", prefix, lost, n), err
	default:
		return "", fmt.Errorf("unknown case %q", name)
	}
	failed := 0
	for range *b.c.requests {
		if _, _, err := hello(cl.addr, time.Second); err != nil {
			failed++
		}
	}
	return fmt.Sprintf("%s-%s-failed %d of %d", prefix, name, failed, *b.c.requests), nil
}

// scaleDown opens the connections at once against a stopped slot 2, then
// removes slot 2, and counts the requests that got no answer.
func (b *bench) scaleDown(cl *cluster, victim int) (lost, n int, err error) {
	syscall.Kill(victim, syscall.SIGSTOP)
	n = *b.c.queued
	var wg sync.WaitGroup
	var mu sync.Mutex
	opened := make(chan struct{}, n)
	for range n {
		wg.Go(func() {
			_, _, err := request(cl.addr, 15*time.Second, opened)
			if err != nil {
				mu.Lock()
				lost++
				mu.Unlock()
			}
		})
	}
	for range n {
		<-opened // every connection is established (queued, or answered)
	}
	err = cl.command("workers 1")
	wg.Wait()
	return lost, n, err
}

// waitLog waits for a line of the server's log that contains text: the
// server's own word that the fault took hold.
func waitLog(s *harness.Suite, cl *cluster, text string) error {
	return harness.Poll(s.Ctx, 10*time.Millisecond, 20*time.Second, func() bool {
		b, _ := os.ReadFile(cl.Log)
		return strings.Contains(string(b), text)
	})
}

// hello sends one request on a fresh connection with the whole exchange
// bounded by timeout, and parses the answer.
func hello(addr string, timeout time.Duration) (id, pid int, err error) {
	return request(addr, timeout, nil)
}

func request(addr string, timeout time.Duration, opened chan<- struct{}) (id, pid int, err error) {
	deadline := time.Now().Add(timeout)
	c, err := net.DialTimeout("tcp", addr, timeout)
	if opened != nil {
		opened <- struct{}{}
	}
	if err != nil {
		return 0, 0, err
	}
	defer c.Close()
	c.SetDeadline(deadline)
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: steer\r\nConnection: close\r\n\r\n"); err != nil {
		return 0, 0, err
	}
	body, err := io.ReadAll(c)
	if err != nil {
		return 0, 0, err
	}
	if _, err := fmt.Sscanf(string(body[strings.Index(string(body), "Hello from"):]), "Hello from worker=%d pid=%d", &id, &pid); err != nil {
		return 0, 0, errors.New("no hello in the answer")
	}
	return id, pid, nil
}
