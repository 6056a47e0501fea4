// Command pingpong measures the floor under forkline's round trip on this
// machine: two Go processes that bounce a message of one forkline frame (a
// 24-byte header and a 64-byte payload: 88 bytes) over a unix socketpair,
// with nothing else in the path. The ipc suite (bench/ipc) runs it next to
// bench/ipc/forkline.
//
// Two ways of waiting for the message:
//
//   - netpoll: a net.Conn in each process, as forkline's channel is. A read
//     that finds nothing parks the goroutine; the Go runtime sleeps in
//     epoll_wait and is woken by the peer's write. Every Go program that
//     shares a thread with other goroutines (a worker serving HTTP) waits
//     this way; it is the floor for forkline.
//   - blocking: a blocking read(2) on the raw descriptor, which holds the
//     thread. No Go server can wait this way without stalling its other
//     goroutines; it shows what the kernel alone costs.
//
// Both processes run with one P (the child is this binary re-executed with
// GOMAXPROCS=1), as forkline's parent does, and its workers on a 2-CPU
// machine. It prints one line:
//
//	floor-<mode>-roundtrip-us <median>
//
// and the p90 and p99 on stderr. The run is bounded by -timeout.
//
// Usage:
//
//	pingpong [-mode netpoll|blocking] [-rt 20000] [-warmup 2000] [-timeout 1m]
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"syscall"
	"time"
)

const (
	msgSize = 24 + 64 // one forkline frame: header and a 64-byte payload
	envFD   = "PINGPONG_CHILD"
)

func main() {
	mode := flag.String("mode", "netpoll", "how each side waits: netpoll or blocking")
	rt := flag.Int("rt", 20000, "round trips measured")
	warmup := flag.Int("warmup", 2000, "round trips before measuring")
	timeout := flag.Duration("timeout", time.Minute, "bound on the whole run")
	flag.Parse()
	if *mode != "netpoll" && *mode != "blocking" {
		fmt.Fprintf(os.Stderr, "pingpong: unknown -mode %q: netpoll or blocking\n", *mode)
		os.Exit(2)
	}
	if os.Getenv(envFD) != "" {
		if err := echo(*mode); err != nil {
			fmt.Fprintln(os.Stderr, "pingpong child:", err)
			os.Exit(1)
		}
		return
	}
	runtime.GOMAXPROCS(1)
	if err := run(*mode, *rt, *warmup, *timeout); err != nil {
		fmt.Fprintln(os.Stderr, "pingpong:", err)
		os.Exit(1)
	}
}

func run(mode string, rt, warmup int, timeout time.Duration) error {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return os.NewSyscallError("socketpair", err)
	}
	childEnd := os.NewFile(uintptr(fds[1]), "child")
	cmd := exec.Command(os.Args[0], os.Args[1:]...)
	cmd.ExtraFiles = []*os.File{childEnd} // fd 3
	cmd.Env = append(os.Environ(), envFD+"=3", "GOMAXPROCS=1")
	cmd.Stderr = os.Stderr
	err = cmd.Start()
	childEnd.Close()
	if err != nil {
		syscall.Close(fds[0])
		return err
	}
	watchdog := time.AfterFunc(timeout, func() {
		fmt.Fprintf(os.Stderr, "pingpong: not done within %v\n", timeout)
		cmd.Process.Kill()
		os.Exit(2)
	})
	defer watchdog.Stop()

	c, err := open(mode, fds[0])
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return err
	}
	buf := make([]byte, msgSize)
	lat := make([]time.Duration, 0, rt)
	for i := range warmup + rt {
		t := time.Now()
		if _, err := c.Write(buf); err != nil {
			return err
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			return err
		}
		if i >= warmup {
			lat = append(lat, time.Since(t))
		}
	}
	c.Close() // the child reads EOF and exits
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("child: %w", err)
	}
	slices.Sort(lat)
	us := func(q float64) float64 { return float64(lat[int(q*float64(len(lat)-1))]) / 1e3 }
	fmt.Printf("floor-%s-roundtrip-us %.1f\n", mode, us(0.5))
	fmt.Fprintf(os.Stderr, "floor %s: %d round trips: p50 %.1f us, p90 %.1f us, p99 %.1f us\n", mode, rt, us(0.5), us(0.9), us(0.99))
	return nil
}

// echo is the child: it sends back every message until EOF.
func echo(mode string) error {
	c, err := open(mode, 3)
	if err != nil {
		return err
	}
	defer c.Close()
	buf := make([]byte, msgSize)
	for {
		if _, err := io.ReadFull(c, buf); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if _, err := c.Write(buf); err != nil {
			return err
		}
	}
}

// open returns the socket fd as a net.Conn (netpoll) or as a blocking
// raw descriptor (blocking). It takes ownership of fd.
func open(mode string, fd int) (io.ReadWriteCloser, error) {
	if mode == "blocking" {
		return rawFD(fd), nil
	}
	f := os.NewFile(uintptr(fd), "pingpong")
	defer f.Close()
	return net.FileConn(f)
}

// rawFD reads and writes a descriptor with plain blocking system calls.
type rawFD int

func (fd rawFD) Read(p []byte) (int, error) {
	for {
		n, err := syscall.Read(int(fd), p)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return 0, os.NewSyscallError("read", err)
		}
		if n == 0 {
			return 0, io.EOF
		}
		return n, nil
	}
}

func (fd rawFD) Write(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		m, err := syscall.Write(int(fd), p[n:])
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return n, os.NewSyscallError("write", err)
		}
		n += m
	}
	return n, nil
}

func (fd rawFD) Close() error { return syscall.Close(int(fd)) }
