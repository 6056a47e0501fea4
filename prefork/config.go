package prefork

import (
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/forkline/forkline/internal/msg"
	"github.com/forkline/forkline/internal/supervisor"
	"github.com/forkline/forkline/internal/worker"
)

// Defaults for the zero values of [Config].
const (
	DefaultAddr         = ":8080"
	DefaultNetwork      = "tcp"
	DefaultStopTimeout  = 10 * time.Second
	DefaultReadyTimeout = 30 * time.Second

	DefaultHeartbeatInterval = time.Second
	DefaultMaxMessageSize    = 1 << 20
)

// Mode says how workers get their listening socket.
type Mode int

const (
	// ModeAuto picks ModeReusePort where the kernel balances SO_REUSEPORT
	// sockets (reuseport.Supported) and ModeInherit elsewhere.
	ModeAuto Mode = iota
	// ModeReusePort gives every worker slot its own SO_REUSEPORT socket on
	// the same address: the kernel spreads connections across them.
	ModeReusePort
	// ModeInherit binds one socket and hands it to every worker, which all
	// accept from the same queue. Spread is uneven, but it works everywhere.
	ModeInherit
)

var modeNames = [...]string{ModeAuto: "auto", ModeReusePort: "reuseport", ModeInherit: "inherit"}

// String returns "auto", "reuseport" or "inherit".
func (m Mode) String() string {
	if m >= 0 && int(m) < len(modeNames) {
		return modeNames[m]
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// MarshalText implements [encoding.TextMarshaler].
func (m Mode) MarshalText() ([]byte, error) { return []byte(m.String()), nil }

// UnmarshalText implements [encoding.TextUnmarshaler], so a Mode can be a
// flag: flag.TextVar(&cfg.Mode, "mode", prefork.ModeAuto, "auto, reuseport or inherit").
func (m *Mode) UnmarshalText(text []byte) error {
	for i, name := range modeNames {
		if string(text) == name {
			*m = Mode(i)
			return nil
		}
	}
	return fmt.Errorf("prefork: unknown mode %q (want auto, reuseport or inherit)", text)
}

// Steering says whether the parent decides which slots' sockets the kernel
// may give a new connection (an SK_REUSEPORT eBPF program; Linux 5.14+,
// CAP_BPF or root).
type Steering int

const (
	// SteerAuto steers when the program loads, and logs once why not.
	SteerAuto Steering = iota
	// SteerOff never steers: the kernel picks by its hash alone, and a
	// slot that has had no worker for a second stops listening until its
	// next worker starts.
	SteerOff
	// SteerRequired fails to start without steering.
	SteerRequired
)

var steeringNames = [...]string{SteerAuto: "auto", SteerOff: "off", SteerRequired: "required"}

// String returns "auto", "off" or "required".
func (s Steering) String() string {
	if s >= 0 && int(s) < len(steeringNames) {
		return steeringNames[s]
	}
	return fmt.Sprintf("Steering(%d)", int(s))
}

// MarshalText implements [encoding.TextMarshaler].
func (s Steering) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText implements [encoding.TextUnmarshaler], so that Steering
// can be a flag: flag.TextVar(&cfg.Steering, "steering", prefork.SteerAuto, "auto, off or required").
func (s *Steering) UnmarshalText(text []byte) error {
	for i, name := range steeringNames {
		if string(text) == name {
			*s = Steering(i)
			return nil
		}
	}
	return fmt.Errorf("prefork: unknown steering %q (want auto, off or required)", text)
}

// Config says how to run a cluster. The zero value is useful: every field
// has a default, documented on the field, for its zero value. Run refuses
// a value it cannot run with (a negative count or duration, say) with an
// error naming the field; no value is silently replaced.
//
// A reload starts the new binary's workers under the running parent: the
// fields that shape a worker (MaxRequests, MaxRequestsJitter, the workers'
// OnMessage, OnRequest and Logger, their MaxMessageSize, and the StopTimeout
// of Run's drain) come from the new binary; the parent keeps its own values
// of the others until it is restarted.
type Config struct {
	// Addr is the address to serve on. Empty means ":$PORT" when the PORT
	// environment variable is set, and DefaultAddr (":8080") otherwise.
	// Port 0 picks a free port once; every worker serves on that port.
	Addr string

	// Network is Addr's network: "tcp" (default), "tcp4", "tcp6"; "udp",
	// "udp4", "udp6" (serve it with ServePacket); or "unix" (Addr is a
	// path; see Address).
	Network string

	// Addresses, when set, lists every address the cluster serves, instead
	// of Addr and Network (which must then be empty): the first is the
	// main one, handed to the serving function; a serving function finds
	// the others by name with Listener or PacketConn. Every slot gets a
	// socket of its own for each TCP and UDP address (in reuseport mode:
	// each address its own reuseport group, steered like the first); a
	// unix address is one socket for all.
	Addresses []Address

	// Workers is the number of worker processes. Zero means one per CPU the
	// process may use: the Go runtime's default GOMAXPROCS, which, unlike
	// runtime.NumCPU, honours a container's CPU limit (the cgroup quota) as
	// well as the CPU affinity mask. Each worker runs with GOMAXPROCS = those
	// CPUs / Workers (at least 1), and the parent, which only supervises and
	// relays, with GOMAXPROCS = 1, unless the GOMAXPROCS environment variable
	// is set.
	Workers int

	// Mode chooses between per-worker SO_REUSEPORT sockets and one socket
	// inherited by every worker. ModeAuto (the zero value) picks the first
	// where the platform really balances it.
	Mode Mode

	// Steering chooses whether the parent steers new connections to the
	// slots whose worker accepts: SteerAuto (the zero value) when the
	// kernel and the process's privileges allow it. A slot is eligible
	// while one of its workers serves and its accept queue moves; the
	// connections already queued on a slot that leaves stay for its worker
	// or its successor, and those of a socket that closes go to an eligible
	// one. Reuseport mode only.
	Steering Steering

	// StopTimeout bounds a graceful stop: a draining worker that has not
	// exited within it is killed. Zero means DefaultStopTimeout.
	StopTimeout time.Duration

	// ReadyTimeout is how long a new worker has to become ready (to start
	// serving): at start, after a crash, and in a reload. A worker that is
	// not ready in time is killed and counts as a failed start. Zero means
	// DefaultReadyTimeout.
	ReadyTimeout time.Duration

	// HeartbeatTimeout, when positive, turns on liveness checks: the
	// parent probes each worker over its channel every HeartbeatInterval,
	// and a worker that has not answered for HeartbeatTimeout (a stopped
	// or wedged process) gets SIGTERM, then SIGKILL a second later, and is
	// replaced on its slot's socket. Zero (the default) turns them off.
	HeartbeatTimeout time.Duration

	// HeartbeatInterval is the probe period when HeartbeatTimeout is set;
	// it must be shorter than HeartbeatTimeout. Zero means
	// DefaultHeartbeatInterval, or HeartbeatTimeout/2 if that is shorter.
	HeartbeatInterval time.Duration

	// MaxRequests, when positive, recycles a worker after it has served
	// that many requests (Run) or connections (Serve), plus a random
	// number in [0, MaxRequestsJitter] so that workers do not all recycle
	// at once. The replacement is ready before the old worker drains, one
	// slot at a time.
	MaxRequests       int
	MaxRequestsJitter int

	// MaxMemory, when positive, recycles a worker whose resident memory
	// (RSS) exceeds it, in bytes; the parent checks every second. A limit
	// below what a fresh worker uses would recycle it for ever: the slot
	// then waits 10 s, doubling up to 10 minutes, and the log says why.
	// Linux only: elsewhere Serve logs that it is not enforced.
	MaxMemory int64

	// MaxMessageSize bounds one message's payload, in bytes. Zero means
	// DefaultMaxMessageSize (1 MiB). The limit of a worker's channel is
	// the lower of the parent's and the worker's (which a reload may
	// change); Send refuses a larger message with ErrTooLarge, and a worker
	// that sends a larger frame anyway is broken and is replaced.
	MaxMessageSize int

	// OnEvent, if set, is called in the parent for every event: each
	// worker's (fork, online, listening, disconnect, exit) and the
	// cluster's (ready, reloading, reloaded, stopping). Events are
	// delivered one at a time, in the order they happened, on a goroutine
	// of their own, never the supervisor's: a callback may call the
	// Cluster's methods (even Reload); while it runs, later events wait.
	OnEvent func(Event)

	// OnMessage, if set, is called for every message sent to this process
	// (parent or worker) with Send, in order for each sender, from the
	// goroutine that reads that sender's channel: while it runs, further
	// messages from the same sender wait (and, past the queue's bound, the
	// sender gets ErrQueueFull); heartbeats do not. A panic in it is
	// recovered and logged. Nil drops messages.
	OnMessage func(Message)

	// OnRequest, if set, answers requests sent to this process with
	// Request; each runs in a goroutine of its own. The returned bytes, or
	// the error's text, go back to the requester. Nil answers every
	// request with an error. A reply that cannot be sent (over the limit,
	// or the queue to the requester is full), and a panic in OnRequest,
	// reach the requester as an error that says why.
	OnRequest func(Message) ([]byte, error)

	// ControlSocket is the path of the parent's control socket, which the
	// forkline command (cmd/forkline) speaks to: status, reload, scale,
	// kill, stop and a stream of events, as newline-delimited JSON. It is
	// created with mode 0600 and answers only this process's user and root
	// (checked by the peer's credentials); a stale socket file is replaced,
	// a served one is an error. Empty means $RUNTIME_DIRECTORY/forkline.sock
	// when systemd gives the service a RuntimeDirectory=, else none; "off"
	// means none. Linux, macOS and FreeBSD.
	ControlSocket string

	// User, when set, is the user every worker runs as: a name, or a
	// decimal uid (a number is an id, known to the user database or not).
	// Group is their group, a name or a decimal gid; empty means User's
	// primary group. Workers get no supplementary groups. Names are
	// resolved once, at start, with os/user (the C library's lookup with
	// cgo; /etc/passwd and /etc/group without). Before it binds a socket,
	// Run refuses an unknown name, and a parent that may not switch: one
	// neither root nor holding CAP_SETUID and CAP_SETGID, unless the ids
	// are its own (its workers then keep its supplementary groups), or one
	// whose capabilities the workers would keep across exec (ambient, or
	// file capabilities on the executable). User must be able to execute
	// the executable. Unix only: elsewhere setting either is an error
	// (errors.ErrUnsupported). A reload keeps the parent's values.
	//
	// The parent keeps its privileges, as nginx's master does: it binds
	// the sockets a scale-up adds (below port 1024 that takes
	// CAP_NET_BIND_SERVICE), starts workers as User (CAP_SETUID,
	// CAP_SETGID) and re-executes itself to upgrade; dropping them would
	// lose all three. What serves requests runs unprivileged and cannot
	// signal or ptrace the parent (another uid); the workers share a uid,
	// so one can signal or ptrace another.
	User  string
	Group string

	// Logger receives the cluster's log records, with the keys worker,
	// pid, gen, signal and err. Nil means slog.Default().
	Logger *slog.Logger
}

// normalized returns c with every zero field replaced by its default.
func (c Config) normalized() Config {
	if len(c.Addresses) > 0 {
		c.Addresses = append([]Address(nil), c.Addresses...)
		for i := range c.Addresses {
			if c.Addresses[i].Network == "" {
				c.Addresses[i].Network = DefaultNetwork
			}
		}
		c.Network, c.Addr = c.Addresses[0].Network, c.Addresses[0].Addr
	}
	if c.Addr == "" {
		c.Addr = DefaultAddr
		if port := os.Getenv("PORT"); port != "" {
			c.Addr = ":" + port
		}
	}
	if c.Network == "" {
		c.Network = DefaultNetwork
	}
	if c.Workers == 0 {
		c.Workers = availableCPUs()
	}
	if c.StopTimeout <= 0 {
		c.StopTimeout = DefaultStopTimeout
	}
	if c.ReadyTimeout <= 0 {
		c.ReadyTimeout = DefaultReadyTimeout
	}
	if c.HeartbeatTimeout > 0 && c.HeartbeatInterval <= 0 {
		c.HeartbeatInterval = min(DefaultHeartbeatInterval, c.HeartbeatTimeout/2)
	}
	if c.MaxMessageSize <= 0 {
		c.MaxMessageSize = DefaultMaxMessageSize
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.User != "" && !worker.IsWorker() {
		// Once: the workers of a scale-up or a reload run as the ids of
		// the start. check has refused a name that does not resolve; one
		// that stopped resolving since stays a name, which the starter
		// refuses rather than start a worker as the parent's user.
		if uid, gid, err := supervisor.ResolveCredential(c.User, c.Group); err == nil {
			c.User, c.Group = strconv.FormatUint(uint64(uid), 10), strconv.FormatUint(uint64(gid), 10)
		}
	}
	return c
}

// check reports a configuration the cluster cannot run with, naming the
// field: a value is never silently replaced by a default.
func (c Config) check() error {
	if err := checkAddresses(c); err != nil {
		return err
	}
	if c.Steering < SteerAuto || c.Steering > SteerRequired {
		return fmt.Errorf("prefork: Config.Steering %v: want SteerAuto, SteerOff or SteerRequired", c.Steering)
	}
	if c.Mode < ModeAuto || c.Mode > ModeInherit {
		return fmt.Errorf("prefork: Config.Mode %v: want ModeAuto, ModeReusePort or ModeInherit", c.Mode)
	}
	for _, f := range []struct {
		name string
		v    int64
	}{
		{"Workers", int64(c.Workers)},
		{"StopTimeout", int64(c.StopTimeout)},
		{"ReadyTimeout", int64(c.ReadyTimeout)},
		{"HeartbeatTimeout", int64(c.HeartbeatTimeout)},
		{"HeartbeatInterval", int64(c.HeartbeatInterval)},
		{"MaxRequests", int64(c.MaxRequests)},
		{"MaxRequestsJitter", int64(c.MaxRequestsJitter)},
		{"MaxMemory", c.MaxMemory},
		{"MaxMessageSize", int64(c.MaxMessageSize)},
	} {
		if f.v < 0 {
			return fmt.Errorf("prefork: Config.%s is %s: it must not be negative (0 means the default)", f.name, value(f.name, f.v))
		}
	}
	if c.HeartbeatTimeout > 0 && c.HeartbeatInterval >= c.HeartbeatTimeout {
		return fmt.Errorf("prefork: Config.HeartbeatInterval %v is not shorter than HeartbeatTimeout %v: a worker would be judged before it was asked", c.HeartbeatInterval, c.HeartbeatTimeout)
	}
	if c.HeartbeatTimeout == 0 && c.HeartbeatInterval > 0 {
		return fmt.Errorf("prefork: Config.HeartbeatInterval %v is set but HeartbeatTimeout is not: heartbeats are off", c.HeartbeatInterval)
	}
	return c.checkUser()
}

// checkUser resolves User and Group in the parent and checks that it may
// start workers as them. A worker does not: it already runs as them.
func (c Config) checkUser() error {
	if c.User == "" {
		if c.Group != "" {
			return fmt.Errorf("prefork: Config.Group %q is set but User is not: name the workers' user too", c.Group)
		}
		return nil
	}
	if worker.IsWorker() {
		return nil
	}
	uid, gid, err := supervisor.ResolveCredential(c.User, c.Group)
	if err != nil {
		return err
	}
	if err := supervisor.CheckCredential(uid, gid); err != nil {
		if c.Group != "" {
			return fmt.Errorf("prefork: Config.User %q, Group %q: %w", c.User, c.Group, err)
		}
		return fmt.Errorf("prefork: Config.User %q: %w", c.User, err)
	}
	return nil
}

// value prints a field's value as its type reads.
func value(name string, v int64) string {
	if strings.HasSuffix(name, "Timeout") || strings.HasSuffix(name, "Interval") {
		return time.Duration(v).String()
	}
	return strconv.FormatInt(v, 10)
}

// supervisorConfig is what the parent's supervisor runs with.
func (c Config) supervisorConfig(inherit bool) supervisor.Config {
	sc := supervisor.Config{
		Addrs: c.addrs(), Workers: c.Workers, Inherit: inherit,
		StopTimeout: c.StopTimeout, ReadyTimeout: c.ReadyTimeout,
		HeartbeatTimeout: c.HeartbeatTimeout, HeartbeatInterval: c.HeartbeatInterval,
		MaxMemory: c.MaxMemory, MaxMessageSize: c.MaxMessageSize, Logger: c.Logger, Steering: int(c.Steering),
		OnRequest: onRequest(c.OnRequest), User: c.User, Group: c.Group,
	}
	if _, set := os.LookupEnv("GOMAXPROCS"); !set {
		// N workers each running one P per CPU were measured 2-13% slower
		// than one process; CPUs / N each made them 1-4% faster.
		sc.WorkerProcs = max(1, availableCPUs()/c.Workers)
	}
	if c.OnEvent != nil {
		sc.OnEvent = func(ev supervisor.Event) { c.OnEvent(eventOf(ev)) }
	}
	if c.OnMessage != nil {
		sc.OnMessage = func(m msg.Message) { c.OnMessage(Message(m)) }
	}
	return sc
}

// workerConfig is what a worker runs with.
func (c Config) workerConfig() worker.Config {
	wc := worker.Config{
		MaxMessageSize: c.MaxMessageSize, StopTimeout: c.StopTimeout,
		MaxRequests: c.MaxRequests, MaxRequestsJitter: c.MaxRequestsJitter,
		OnRequest: onRequest(c.OnRequest), Logger: c.Logger,
	}
	if c.OnMessage != nil {
		wc.OnMessage = func(m msg.Message) { c.OnMessage(Message(m)) }
	}
	return wc
}

func onRequest(h func(Message) ([]byte, error)) func(msg.Message) ([]byte, error) {
	if h == nil {
		return nil
	}
	return func(m msg.Message) ([]byte, error) { return h(Message(m)) }
}
