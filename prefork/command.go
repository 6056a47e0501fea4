package prefork

import (
	"errors"
	"time"

	"github.com/forkline/forkline/internal/supervisor"
)

// Command is a program that knows nothing of forkline, run as every worker
// by RunCommand (and by `forkline run`).
//
// Each worker gets its slot's socket for each address as descriptors 3,
// 4, ... (one per address, never more), announced as systemd announces
// socket activation: LISTEN_FDS, LISTEN_FDNAMES (the addresses' names, the
// main one "main") and LISTEN_PID, its own pid; and as einhorn does:
// EINHORN_FD_COUNT, EINHORN_FD_0=3, ...; plus PORT (the main address's
// port), FORKLINE_WORKER_ID and FORKLINE_GENERATION. It inherits no other
// descriptor. It is ready when it sends READY=1 to its own NOTIFY_SOCKET
// (gunicorn, puma, caddy and anything with sd_notify do it natively), or
// ReadyAfter after it started; until then steering keeps its slot out. Its
// WATCHDOG=1 messages answer the parent's heartbeat (Config.
// HeartbeatTimeout). A drain is SIGTERM: the program stops accepting,
// finishes what it has and exits, within Config.StopTimeout. Argv[0] is
// looked up in PATH at every start, so a reload runs what is on disk then.
type Command struct {
	Argv       []string
	ReadyAfter time.Duration
	// Output receives every line a worker writes on stdout or stderr;
	// nil writes it to the parent's own stdout or stderr, prefixed
	// "[w<id> <pid>] ".
	Output func(w WorkerInfo, stderr bool, line string)
}

// RunCommand runs the cluster with cmd as every worker: the parent binds,
// supervises, reloads (SIGHUP), scales and stops it as it does its own
// workers (see Serve). A worker that exits before it is ready fails the
// start, with the last lines it wrote on stderr in the error. RunCommand
// runs in the parent: there is no worker side.
func (c *Cluster) RunCommand(cmd Command) error {
	if len(cmd.Argv) == 0 {
		return errors.New("prefork: RunCommand: no command")
	}
	if cmd.ReadyAfter < 0 {
		return errors.New("prefork: RunCommand: negative ReadyAfter")
	}
	sc := supervisor.Command{Argv: cmd.Argv, ReadyAfter: cmd.ReadyAfter}
	if out := cmd.Output; out != nil {
		sc.Output = func(id, pid, gen int, stderr bool, line string) {
			out(WorkerInfo{ID: id, PID: pid, Gen: gen}, stderr, line)
		}
	}
	c.command = &sc
	return c.serve(false, func(Config) error {
		return errors.New("prefork: RunCommand runs in the parent; this process has a forkline worker's environment")
	})
}
