package main

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestParentKilled: forkline run's workers have no channel whose EOF would
// tell them their parent died; Linux's parent-death signal (SIGTERM, their
// drain) does. A parent SIGKILLed leaves no worker behind.
func TestParentKilled(t *testing.T) {
	bin := buildForkline(t)
	p, missing := stdlibProgram()
	if missing != "" {
		t.Skip(missing)
	}
	c := startRun(t, bin, p, nil)
	var pidfds []int
	for _, a := range both(t, c.addr) {
		fd, err := unix.PidfdOpen(a.pid, 0)
		if err != nil {
			t.Fatalf("pidfd of worker %d: %v", a.pid, err)
		}
		defer unix.Close(fd)
		pidfds = append(pidfds, fd)
	}
	c.signal(unix.SIGKILL)
	c.wait()
	// A pidfd is readable once its process has exited: wait on that.
	deadline := time.Now().Add(watchdog)
	for _, fd := range pidfds {
		for {
			left := time.Until(deadline)
			if left <= 0 {
				t.Fatal("a worker still runs after its parent was killed")
			}
			n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, int(left/time.Millisecond)+1)
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			if n == 1 {
				break
			}
		}
	}
}
