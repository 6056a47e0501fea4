// Command forkline drives a running forkline cluster through its parent's
// control socket: it shows the workers, reloads, scales, signals a worker,
// stops the cluster and follows its events.
//
//	forkline status             the workers, as a table (-json: as JSON)
//	forkline reload             a new generation; exit status 1 if it failed
//	forkline scale +1           one worker more (or N, or -1)
//	forkline kill 2 HUP         a signal to worker 2 (default TERM)
//	forkline stop               stop gracefully and wait until it has
//	forkline events             every event, as it happens, until ^C
//
// The socket is -socket PATH, else $FORKLINE_SOCKET, else
// $RUNTIME_DIRECTORY/forkline.sock (systemd's RuntimeDirectory=).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"

	"github.com/forkline/forkline/internal/control"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// Exit statuses.
const (
	exitOK    = 0
	exitFail  = 1 // the command failed: the cluster said no, or cannot be reached
	exitUsage = 2 // the command line is wrong
)

// A command is one of forkline's subcommands. A new one (forkline run,
// forkline upgrade) is a line in commands and a function.
type command struct {
	name, args, summary string
	run                 func(cl *cli, args []string) int
}

// commands is filled by init: their functions print the usage, which
// lists them.
var commands []command

func init() {
	commands = []command{
		{"status", "[-json]", "show the cluster and its workers", cmdStatus},
		{"reload", "", "start a new generation and wait until it serves, or failed", cmdReload},
		{"scale", "N|+K|-K", "set the number of workers, or change it by K", cmdScale},
		{"kill", "ID [SIGNAL]", "send a signal (default TERM) to worker ID", cmdKill},
		{"stop", "", "stop the cluster gracefully and wait until it has stopped", cmdStop},
		{"events", "[-json]", "print the cluster's events as they happen, until interrupted", cmdEvents},
		{"upgrade", "", "re-execute the parent in place from the binary on disk, keeping the workers; wait for the outcome", cmdUpgrade},
		{"run", "[flags] -- CMD [ARGS...]", "run CMD as every worker of a new cluster, each on its own socket", cmdRun},
	}
}

// run is forkline with args (without the program's name); it returns the
// exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cl := &cli{ctx: ctx, stdout: stdout, stderr: stderr}
	fs := flag.NewFlagSet("forkline", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {}
	fs.StringVar(&cl.socket, "socket", "", "")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			usage(stdout)
			return exitOK
		}
		usage(stderr)
		return exitUsage
	}
	args = fs.Args()
	if len(args) == 0 {
		usage(stderr)
		return exitUsage
	}
	if args[0] == "help" {
		usage(stdout)
		return exitOK
	}
	for _, c := range commands {
		if c.name == args[0] {
			cl.cmd = c
			return c.run(cl, args[1:])
		}
	}
	fmt.Fprintf(stderr, "forkline: unknown command %q\n\n", args[0])
	usage(stderr)
	return exitUsage
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "usage: forkline [-socket PATH] <command> [arguments]\n\nCommands:\n")
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	for _, c := range commands {
		fmt.Fprintf(tw, "  %s %s\t%s\n", c.name, c.args, c.summary)
	}
	tw.Flush()
	fmt.Fprintf(w, "\n%s\n\nforkline <command> -h tells more.\n", socketHelp)
}

const socketHelp = "The control socket is -socket PATH (before or after the command), else\n" +
	"$FORKLINE_SOCKET, else $RUNTIME_DIRECTORY/forkline.sock."

// cli is one run of forkline: its outputs and the command running.
type cli struct {
	ctx            context.Context // ends at SIGINT or SIGTERM
	stdout, stderr io.Writer
	socket         string // -socket
	cmd            command
}

// flags returns the command's flag set, with -socket.
func (cl *cli) flags() *flag.FlagSet {
	fs := flag.NewFlagSet("forkline "+cl.cmd.name, flag.ContinueOnError)
	fs.SetOutput(cl.stderr)
	fs.StringVar(&cl.socket, "socket", cl.socket, "`PATH` of the cluster's control socket")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: forkline %s %s\n\n%s.\n%s\n\nFlags:\n", cl.cmd.name, cl.cmd.args, upper(cl.cmd.summary), socketHelp)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses the command's arguments, of which min to max are not
// flags. When it returns false, the command ends with code.
func (cl *cli) parse(fs *flag.FlagSet, args []string, min, max int) (rest []string, code int, ok bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, exitOK, false
		}
		return nil, exitUsage, false
	}
	if n := fs.NArg(); n < min || n > max {
		fmt.Fprintf(cl.stderr, "forkline %s: wrong number of arguments\n", cl.cmd.name)
		fs.Usage()
		return nil, exitUsage, false
	}
	return fs.Args(), exitOK, true
}

// dial connects to the control socket; when it returns nil, the command
// ends with code.
func (cl *cli) dial() (c *control.Client, code int) {
	path, err := socketPath(cl.socket)
	if err != nil {
		fmt.Fprintf(cl.stderr, "forkline %s: %v\n", cl.cmd.name, err)
		return nil, exitUsage
	}
	c, err = control.Dial(path)
	if err != nil {
		hint := ""
		switch {
		case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ENOENT):
			hint = " — is the cluster running with a control socket?"
		case errors.Is(err, syscall.EACCES):
			hint = " — only the cluster's user and root may use it"
		}
		fmt.Fprintf(cl.stderr, "forkline %s: %v%s\n", cl.cmd.name, err, hint)
		return nil, exitFail
	}
	return c, exitOK
}

// fail reports err and returns the failure's exit status.
func (cl *cli) fail(err error) int {
	if cl.ctx.Err() != nil && errors.Is(err, cl.ctx.Err()) {
		err = errors.New("interrupted; what was asked of the cluster goes on")
	}
	fmt.Fprintf(cl.stderr, "forkline %s: %v\n", cl.cmd.name, err)
	return exitFail
}

// socketPath is the control socket's path: flag, else $FORKLINE_SOCKET,
// else $RUNTIME_DIRECTORY/forkline.sock (the first directory of the list
// systemd sets).
func socketPath(flag string) (string, error) {
	if flag != "" {
		return flag, nil
	}
	if p := os.Getenv("FORKLINE_SOCKET"); p != "" {
		return p, nil
	}
	if d, _, _ := strings.Cut(os.Getenv("RUNTIME_DIRECTORY"), ":"); d != "" {
		return filepath.Join(d, "forkline.sock"), nil
	}
	return "", errors.New("no control socket: pass -socket PATH")
}

func upper(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}
