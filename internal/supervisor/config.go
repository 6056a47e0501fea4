package supervisor

import (
	"errors"
	"log/slog"
	"os"
	"time"

	"github.com/forkline/forkline/internal/msg"
)

// ErrClosed is what Run returns after Stop, and what calls on a stopped
// supervisor return (package prefork exports it as ErrServerClosed).
var ErrClosed = errors.New("prefork: cluster closed")

// Config is what a supervisor runs with. Package prefork fills in the
// defaults and checks the values; the supervisor takes them as they are.
type Config struct {
	Addrs   []Address // the first is the main one
	Workers int
	Inherit bool // one socket for every slot, not one SO_REUSEPORT socket each (unix: always)

	StopTimeout       time.Duration
	ReadyTimeout      time.Duration
	HeartbeatTimeout  time.Duration // 0: no heartbeats
	HeartbeatInterval time.Duration
	MaxMemory         int64 // bytes; 0: no limit
	MaxMessageSize    int
	Steering          int // SteerAuto, SteerOff or SteerRequired

	Logger    *slog.Logger
	OnEvent   func(Event)
	OnMessage func(msg.Message)
	OnRequest func(msg.Message) ([]byte, error)

	// WorkerProcs, when positive, is the GOMAXPROCS each forked worker
	// runs with.
	WorkerProcs int
	// WorkerEnv is added to each forked worker's environment. Only the
	// tests of package prefork set it (prefork.WorkerEnv, export_test.go):
	// it names the helper program their workers run.
	WorkerEnv []string

	// Manager is the service manager to report to (systemd's notify
	// protocol); nil: none. Watchdog, when positive, is how often the loop
	// pings its watchdog; StoreSockets pushes every slot's sockets to its
	// fd store (removed at scale-down), for a restarted parent to adopt.
	Manager      Manager
	Watchdog     time.Duration
	StoreSockets bool
	// Inherited are listening sockets the parent was given (socket
	// activation, or its fd store after a restart), adopted instead of
	// binding where they match an address (sockets.go).
	Inherited []Inherited

	// Command, when set, makes every worker that program (forkline run).
	Command *Command

	// User and Group, when User is set, are the numeric uid and gid every
	// worker runs as, with no supplementary groups (unix). Package prefork
	// resolves names to ids and checks, before any socket is bound, that
	// this process may switch to them; a starter takes ids only
	// (workerCredential, cred_unix.go) and fails rather than start a
	// worker as this process's own user.
	User, Group string

	// Upgrade is the state an upgrade handed this process (PendingUpgrade):
	// New and Run adopt it. CarryFDs names the descriptors of the caller's
	// that an upgrade carries to the next parent (the control socket).
	Upgrade  *UpgradeHandoff
	CarryFDs func() map[string]int
	// EarlySignals came before the caller's handler ran (an upgrade's
	// first moments); Run applies them once the workers are adopted.
	EarlySignals []os.Signal

	// Starter starts the workers; nil forks this executable again.
	Starter Starter
	// Bind opens one listening socket and returns the parent's raw
	// descriptor and the address it is bound to (port 0 resolved); nil
	// binds for real (bind_unix.go).
	Bind func(network, addr string, reusePort bool) (fd int, bound string, err error)
	// MemoryOf reads a worker's resident memory in bytes; nil reads /proc.
	MemoryOf func(pid int) (int64, error)
}

// Respawn backoff: the first replacement after a crash starts at once; each
// further consecutive failure of the same slot waits 1.5 times longer, from
// backoffMin up to backoffMax. A worker that stays ready for stableAfter
// resets its slot's count.
const (
	backoffMin    = 100 * time.Millisecond
	backoffMax    = 30 * time.Second
	backoffFactor = 1.5
	stableAfter   = 10 * time.Second
)

// killGrace is how long a worker that is told to go with SIGTERM (a missed
// heartbeat) has before SIGKILL.
const killGrace = time.Second

// memoryCheckInterval is how often MaxMemory is checked; a slot whose fresh
// worker is over the limit at once waits memoryBackoffMin, doubling up to
// memoryBackoffMax, before it recycles again.
const (
	memoryCheckInterval = time.Second
	memoryBackoffMin    = 10 * time.Second
	memoryBackoffMax    = 10 * time.Minute
)

// maxRelayWait is how long, at most, a relay to a full queue waits for
// room before it drops (see relaySend).
const maxRelayWait = time.Second
