package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/forkline/forkline/metrics"
	"github.com/forkline/forkline/prefork"
)

// cmdRun is forkline run: any program as the cluster's workers, each with
// its slot's own socket (prefork.RunCommand).
func cmdRun(cl *cli, args []string) int {
	fs := flag.NewFlagSet("forkline run", flag.ContinueOnError)
	fs.SetOutput(cl.stderr)
	var cfg prefork.Config
	var addrs addrList
	fs.IntVar(&cfg.Workers, "workers", 0, "worker processes (0: one per CPU the parent may use)")
	fs.Var(&addrs, "addr", "an address to serve, `[NAME=]ADDR`: host:port (TCP), udp://host:port, unix:///path; repeat for several (the first is fd 3, the next fd 4...; default :$PORT or :8080)")
	ready := fs.String("ready", "notify", "when a worker is ready: `notify` (its READY=1 on $NOTIFY_SOCKET) or after=DURATION")
	fs.DurationVar(&cfg.StopTimeout, "stop-timeout", prefork.DefaultStopTimeout, "how long a worker may drain after SIGTERM before it is killed")
	fs.DurationVar(&cfg.ReadyTimeout, "ready-timeout", prefork.DefaultReadyTimeout, "how long a new worker may take to become ready")
	fs.DurationVar(&cfg.HeartbeatTimeout, "heartbeat-timeout", 0, "replace a worker that sends no WATCHDOG=1 for this long (0: off)")
	fs.TextVar(&cfg.Mode, "mode", prefork.ModeAuto, "how workers get their socket: auto, reuseport or inherit")
	fs.TextVar(&cfg.Steering, "steering", prefork.SteerAuto, "steer new connections to slots that accept (eBPF): auto, off or required")
	fs.StringVar(&cfg.User, "user", "", "run every worker as this `USER`, a name or uid; the parent keeps its privileges (to bind, scale, start workers and upgrade)")
	fs.StringVar(&cfg.Group, "group", "", "the workers' `GROUP`, a name or gid (default: the -user's primary group)")
	fs.StringVar(&cfg.ControlSocket, "control", "", "serve the control socket at this `PATH` (default $RUNTIME_DIRECTORY/forkline.sock under systemd; off: none)")
	metricsAddr := fs.String("metrics-addr", "", "serve Prometheus /metrics from the parent on this `ADDR`")
	logFormat := fs.String("log", "text", "the parent's log and the workers' output: text (workers' lines prefixed [w<id> <pid>]) or json")
	verbose := fs.Bool("v", false, "log every worker event")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: forkline run [flags] -- CMD [ARGS...]\n\n"+
			"Runs CMD as every worker. Each gets its slot's socket as fd 3 (LISTEN_FDS=1,\n"+
			"LISTEN_PID, LISTEN_FDNAMES; EINHORN_FD_0=3; PORT), FORKLINE_WORKER_ID and\n"+
			"FORKLINE_GENERATION. SIGHUP reloads, SIGTERM drains, SIGTTIN/SIGTTOU scale.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	argv := fs.Args()
	if len(argv) == 0 {
		fmt.Fprintln(cl.stderr, "forkline run: no command: forkline run [flags] -- CMD [ARGS...]")
		return exitUsage
	}
	cmd := prefork.Command{Argv: argv}
	switch {
	case *ready == "notify":
	case strings.HasPrefix(*ready, "after="):
		d, err := time.ParseDuration(strings.TrimPrefix(*ready, "after="))
		if err != nil || d <= 0 {
			fmt.Fprintf(cl.stderr, "forkline run: -ready %s: not a positive duration\n", *ready)
			return exitUsage
		}
		cmd.ReadyAfter = d
	default:
		fmt.Fprintf(cl.stderr, "forkline run: -ready %q: want notify or after=DURATION\n", *ready)
		return exitUsage
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	opts := &slog.HandlerOptions{Level: level}
	switch *logFormat {
	case "text":
		cfg.Logger = slog.New(slog.NewTextHandler(cl.stderr, opts))
	case "json":
		cfg.Logger = slog.New(slog.NewJSONHandler(cl.stderr, opts))
		cmd.Output = jsonOutput(cl.stdout, cl.stderr)
	default:
		fmt.Fprintf(cl.stderr, "forkline run: -log %q: want text or json\n", *logFormat)
		return exitUsage
	}
	if len(addrs) > 0 {
		cfg.Addresses = addrs
	}
	c := prefork.New(cfg)
	var ms *http.Server
	if *metricsAddr != "" {
		ln, err := net.Listen("tcp", *metricsAddr)
		if err != nil {
			fmt.Fprintf(cl.stderr, "forkline run: -metrics-addr: %v\n", err)
			return exitFail
		}
		ms = &http.Server{Handler: metrics.Handler(c), ReadHeaderTimeout: 10 * time.Second}
		go ms.Serve(ln) // shut down below, once the cluster has stopped
	}
	err := c.RunCommand(cmd)
	if ms != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		ms.Shutdown(ctx)
		cancel()
	}
	if err != nil {
		fmt.Fprintf(cl.stderr, "forkline run: %v\n", err)
		return exitFail
	}
	return exitOK
}

// addrList is -addr, repeated.
type addrList []prefork.Address

func (l *addrList) String() string { return fmt.Sprint(*l) }

func (l *addrList) Set(v string) error {
	a := prefork.Address{Network: "tcp"}
	if name, rest, ok := strings.Cut(v, "="); ok {
		a.Name, v = name, rest
	}
	switch {
	case strings.HasPrefix(v, "udp://"):
		a.Network, a.Addr = "udp", strings.TrimPrefix(v, "udp://")
	case strings.HasPrefix(v, "unix://"):
		a.Network, a.Addr = "unix", strings.TrimPrefix(v, "unix://")
	default:
		a.Addr = strings.TrimPrefix(v, "tcp://")
	}
	if a.Name == "" {
		if len(*l) > 0 {
			return fmt.Errorf("%s: every address after the first needs a name (NAME=ADDR)", v)
		}
		a.Name = "main"
	}
	*l = append(*l, a)
	return nil
}

// jsonOutput writes each worker line as one JSON object: stdout's lines to
// stdout, stderr's to stderr.
func jsonOutput(stdout, stderr io.Writer) func(prefork.WorkerInfo, bool, string) {
	var mu sync.Mutex
	return func(w prefork.WorkerInfo, isErr bool, line string) {
		out, stream := stdout, "stdout"
		if isErr {
			out, stream = stderr, "stderr"
		}
		b, _ := json.Marshal(struct {
			Time   time.Time `json:"time"`
			Worker int       `json:"worker"`
			PID    int       `json:"pid"`
			Gen    int       `json:"gen"`
			Stream string    `json:"stream"`
			Line   string    `json:"line"`
		}{time.Now(), w.ID, w.PID, w.Gen, stream, line})
		mu.Lock()
		out.Write(append(b, '\n'))
		mu.Unlock()
	}
}
