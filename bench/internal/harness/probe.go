package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"
)

// Ready is what WaitDistinct saw.
type Ready struct {
	At     time.Time // when the last of the n pids answered first
	Pids   []int     // in the order they first answered
	Probes int
}

// maxProbes bounds WaitDistinct in count, as limit bounds it in time.
const maxProbes = 100_000

// WaitDistinct opens fresh connections to addr, one "GET /" each, until n
// distinct pids have named themselves in the hello body ("Hello from
// worker=<id> pid=<pid> gen=<n>"). A port that starts accepting gives no
// notification, so this polls: a failed probe is retried after 2 ms, a
// good one after 1 ms, so that probing takes little CPU from the processes
// it waits for. It fails past limit, or past 100,000 probes.
func WaitDistinct(ctx context.Context, addr string, n int, limit time.Duration) (Ready, error) {
	var r Ready
	seen := map[int]bool{}
	deadline := time.Now().Add(limit)
	var last error
	for r.Probes < maxProbes {
		if time.Now().After(deadline) {
			return r, fmt.Errorf("%s: %d of %d pids answered within %v (%d probes; last error: %v)", addr, len(seen), n, limit, r.Probes, last)
		}
		r.Probes++
		pid, err := Probe(addr)
		pause := time.Millisecond
		switch {
		case err != nil:
			last, pause = err, 2*time.Millisecond
		case !seen[pid]:
			seen[pid] = true
			r.Pids = append(r.Pids, pid)
			if len(seen) >= n {
				r.At = time.Now()
				return r, nil
			}
		}
		if !Pause(ctx, pause) {
			return r, ctx.Err()
		}
	}
	return r, fmt.Errorf("%s: %d of %d pids answered in %d probes (last error: %v)", addr, len(seen), n, maxProbes, last)
}

// Probe sends one request on a fresh connection and returns the pid named
// in the answer.
func Probe(addr string) (int, error) {
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
	pid, _, ok := ParseHello(resp)
	if !ok {
		return 0, errors.New("no hello with a pid= in the response")
	}
	return pid, nil
}

// ParseHello reads pid and gen from "Hello from worker=<id> pid=<pid>
// gen=<gen>" (or "Slow hello from ...", hello's /slow).
func ParseHello(b []byte) (pid, gen int, ok bool) {
	if !bytes.Contains(bytes.ToLower(b), []byte("hello from ")) {
		return 0, 0, false
	}
	pid, ok = helloField(b, "pid=")
	if !ok {
		return 0, 0, false
	}
	gen, _ = helloField(b, "gen=")
	return pid, gen, true
}

func helloField(b []byte, key string) (int, bool) {
	i := bytes.Index(b, []byte(key))
	if i < 0 {
		return 0, false
	}
	b = b[i+len(key):]
	j := 0
	for j < len(b) && b[j] >= '0' && b[j] <= '9' {
		j++
	}
	n, err := strconv.Atoi(string(b[:j]))
	return n, err == nil
}
