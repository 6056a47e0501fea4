//go:build unix

package prefork

import (
	"os/exec"
	"runtime"
)

// Workers run in process groups of their own. A signal sent to the parent's
// group (a ^C at a terminal, kill -HUP -PGID, SIGTTIN from a job-control
// shell) would otherwise also reach workers, and one that arrives while a
// worker starts, before its runtime has set up its handlers, takes the
// default action: SIGHUP and SIGINT end it, SIGTTIN stops it. The parent
// alone decides what a signal means for the cluster.
//
// spawner starts every worker from one goroutine locked to its OS thread.
// On Linux a child's parent-death signal fires when the thread that forked
// it exits, not the process (golang/go#27505); forking from a thread that
// lives as long as the supervisor keeps the signal for the parent's death.
type spawner struct {
	reqs chan spawnReq
	done chan struct{}
}

type spawnReq struct {
	cmd *exec.Cmd
	err chan error
}

func startSpawner() *spawner {
	sp := &spawner{reqs: make(chan spawnReq), done: make(chan struct{})}
	go func() {
		defer close(sp.done)
		runtime.LockOSThread()
		// Unlock before returning: a goroutine that exits locked takes its
		// thread down with it, which would signal every child.
		defer runtime.UnlockOSThread()
		for r := range sp.reqs {
			r.err <- r.cmd.Start()
		}
	}()
	return sp
}

func (sp *spawner) start(cmd *exec.Cmd) error {
	r := spawnReq{cmd: cmd, err: make(chan error, 1)}
	sp.reqs <- r
	return <-r.err
}

// stop ends the spawner; call it once, after the last child is reaped.
func (sp *spawner) stop() {
	close(sp.reqs)
	<-sp.done
}
