package supervisor

import (
	"bytes"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// reaper reaps the orphans a PID 1 inherits. Run as a container's first
// process (no init: docker run without --init, unshare --pid --fork), the
// parent becomes the parent of every process whose own parent died, a
// worker's grandchildren among them; without it they stay zombies for
// ever. It reaps only zombies that are not its workers (those belong to
// their watch goroutine's Wait), and it scans on the spawner's thread, so
// that a worker just forked is known before it can be seen.
type reaper struct {
	log   *slog.Logger
	spawn *spawner
	sigs  chan os.Signal
	done  chan struct{}

	mu    sync.Mutex
	known map[int]bool // workers started and not yet waited for
}

func startReaper(log *slog.Logger, sp *spawner) *reaper {
	if os.Getpid() != 1 {
		return nil
	}
	r := &reaper{log: log, spawn: sp, sigs: make(chan os.Signal, 1), done: make(chan struct{}), known: make(map[int]bool)}
	signal.Notify(r.sigs, syscall.SIGCHLD)
	go r.run()
	return r
}

func (r *reaper) run() {
	defer close(r.done)
	for range r.sigs {
		r.spawn.run(r.reapOrphans)
	}
}

// started records a worker; the spawner calls it after each fork.
func (r *reaper) started(pid int) {
	if r == nil {
		return
	}
	r.mu.Lock()
	r.known[pid] = true
	r.mu.Unlock()
}

func (r *reaper) forget(pid int) {
	if r == nil {
		return
	}
	r.mu.Lock()
	delete(r.known, pid)
	r.mu.Unlock()
}

// reapOrphans waits for every zombie child that is not a worker.
func (r *reaper) reapOrphans() {
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, path := range stats {
		pid, zombie := zombieChild(path)
		if !zombie {
			continue
		}
		r.mu.Lock()
		mine := r.known[pid]
		r.mu.Unlock()
		if mine {
			continue
		}
		var ws unix.WaitStatus
		if got, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil); err == nil && got == pid {
			r.log.Debug("reaped an orphan", "pid", pid)
		}
	}
}

// zombieChild reads /proc/<pid>/stat: a zombie whose parent is this process?
func zombieChild(path string) (int, bool) {
	stat, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, false
	}
	f := bytes.Fields(stat[i+1:])
	if len(f) < 2 || string(f[0]) != "Z" {
		return 0, false
	}
	ppid, _ := strconv.Atoi(string(f[1]))
	pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(path)))
	return pid, ppid == os.Getpid()
}

func (r *reaper) stop() {
	if r == nil {
		return
	}
	signal.Stop(r.sigs)
	close(r.sigs)
	<-r.done
}
