// Package signals says what each signal means to a forkline parent, and
// delivers signals to it as an [github.com/oklog/run] actor.
//
// # Signals
//
//	Signal   Action     What the parent does
//	SIGHUP   Reload     zero-downtime reload: start a new generation of
//	                    workers, wait until it is ready, then drain the
//	                    old one
//	SIGTERM  Stop       graceful stop: drain every worker within the
//	                    configured StopTimeout, then exit 0
//	SIGINT   Stop       as SIGTERM; a second SIGINT stops at once, as Quit
//	SIGQUIT  Quit       stop at once: kill the workers and exit
//	SIGTTIN  ScaleUp    run one worker more
//	SIGTTOU  ScaleDown  run one worker fewer
//	SIGUSR2  Upgrade    re-execute the parent from the executable on disk,
//	                    in place (same pid), keeping every worker; Linux
//
// This package only maps and delivers; the parent (package prefork) does
// the work in the right column. The table follows gunicorn, and SIGTERM is
// graceful as systemd expects of its default KillSignal. nginx and unicorn
// use the opposite convention (SIGQUIT graceful, SIGTERM fast): scripts
// written for them will stop forkline faster than they meant to.
//
// Standard signals coalesce: two identical signals sent back to back may be
// delivered once, so a handler must not assume one call per kill. To add
// three workers, send SIGTTIN three times and watch the worker count (or
// the log) between sends.
//
// Handling SIGQUIT replaces Go's default goroutine dump; send SIGABRT to a
// parent to get one. A process started with SIGHUP or SIGINT ignored (nohup,
// a background job in a script) handles them again while [Handler] runs, as
// documented in [os/signal].
//
// # Windows and other non-unix systems
//
// There is no SIGHUP, SIGQUIT, SIGTTIN or SIGTTOU to send, so the table
// holds only [os.Interrupt] (Ctrl-C, Ctrl-Break) and [syscall.SIGTERM]
// (console close, logoff, shutdown), both Stop.
package signals

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
)

// Action is what a signal asks the parent to do. The zero value, None, is
// the action of every signal not in the table.
type Action int

// The actions, in the order of the table in the package documentation.
const (
	None      Action = iota // not a forkline signal
	Reload                  // SIGHUP: replace every worker without downtime
	Stop                    // SIGTERM, SIGINT: drain the workers and exit
	Quit                    // SIGQUIT: kill the workers and exit
	ScaleUp                 // SIGTTIN: one worker more
	ScaleDown               // SIGTTOU: one worker fewer
	Upgrade                 // SIGUSR2: re-execute the parent in place, workers kept
)

var actionNames = [...]string{
	None:      "none",
	Reload:    "reload",
	Stop:      "stop",
	Quit:      "quit",
	ScaleUp:   "scale-up",
	ScaleDown: "scale-down",
	Upgrade:   "upgrade",
}

// String returns the action in lower case, as logs show it: "none",
// "reload", "stop", "quit", "scale-up", "scale-down", "upgrade"; any other value gives
// "Action(n)".
func (a Action) String() string {
	if a >= 0 && int(a) < len(actionNames) {
		return actionNames[a]
	}
	return "Action(" + strconv.Itoa(int(a)) + ")"
}

// entry is one row of the table. The platform files define table, sorted by
// name, which is the signal's name without "SIG", as kill -l prints it.
type entry struct {
	name   string
	sig    os.Signal
	action Action
}

// ActionOf returns the action of sig, or None if sig is not in the table
// (including nil).
func ActionOf(sig os.Signal) Action {
	for _, e := range table {
		if e.sig == sig {
			return e.action
		}
	}
	return None
}

// Name returns the name of sig as kill -l and the logs spell it, with the
// "SIG" prefix: "SIGTTIN" for the table's signals (where os.Signal's String
// says "stopped (tty input)"), the signal's own String otherwise.
func Name(sig os.Signal) string {
	for _, e := range table {
		if e.sig == sig {
			return "SIG" + e.name
		}
	}
	if sig == nil {
		return "none"
	}
	return sig.String()
}

// Signals returns every signal in the table on this platform, sorted by
// name: SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGTTIN, SIGTTOU on unix. The
// slice is new on each call; the caller may modify it.
func Signals() []os.Signal {
	sigs := make([]os.Signal, len(table))
	for i, e := range table {
		sigs[i] = e.sig
	}
	return sigs
}

// Parse returns the signal of the table named name, with or without the
// "SIG" prefix, in any case: "HUP", "SIGHUP", "hup" and "sighup" are all
// SIGHUP. Numbers and signals outside the table are an error that lists the
// names Parse knows on this platform.
func Parse(name string) (os.Signal, error) {
	short := name
	if len(short) > 3 && strings.EqualFold(short[:3], "SIG") {
		short = short[3:]
	}
	for _, e := range table {
		if strings.EqualFold(short, e.name) {
			return e.sig, nil
		}
	}
	known := make([]string, len(table))
	for i, e := range table {
		known[i] = e.name
	}
	return nil, fmt.Errorf("signals: unknown signal %q (known: %s)", name, strings.Join(known, ", "))
}

// queue is how many signals wait while handle runs; further ones are
// dropped by os/signal, as the kernel drops a repeated pending signal.
const queue = 8

// Handler returns an actor for [github.com/oklog/run.Group.Add] that
// delivers the signals of the table to handle.
//
// Handler calls [signal.Notify] for [Signals] before it returns, so that a
// signal sent from then on neither takes its default action (SIGHUP and
// SIGINT would end the process, SIGTTIN stop it) nor is lost while the
// actors start: it waits for execute. execute calls handle with each signal
// and its action, one call at a time, in the order of delivery, from the
// goroutine that runs execute. It returns nil once ctx is done or
// interrupt has been called, after calling [signal.Stop]; by then handle
// has returned and is not called again. From that moment the signals have
// Go's default effect again (SIGHUP, SIGINT and SIGTERM end the process), so
// keep the actor running until the parent is about to exit.
//
// handle runs in execute's goroutine: while it runs, execute cannot notice
// ctx or interrupt, and up to 8 further signals wait. It should therefore
// hand the action over and return, and must never block for ever: select on
// a channel that closes when the receiver stops, as in the example.
//
// interrupt ignores its argument. It may be called before, during or after
// execute, concurrently and more than once; it calls signal.Stop too, so
// that an actor whose execute never runs does not keep the signals, and
// called before execute it makes execute return nil at once. A signal that
// arrives together with the stop may or may not be handled.
//
// Handler panics if handle is nil. ctx must be non-nil.
func Handler(ctx context.Context, handle func(os.Signal, Action)) (execute func() error, interrupt func(error)) {
	return handler(ctx, handle, nil)
}

// handler is Handler with a hook that runs once Notify has returned (before
// handler returns), for the tests.
func handler(ctx context.Context, handle func(os.Signal, Action), notified func()) (execute func() error, interrupt func(error)) {
	if handle == nil {
		panic("signals: Handler called with a nil handle")
	}
	stop := make(chan struct{})
	var once sync.Once
	c := make(chan os.Signal, queue)
	signal.Notify(c, Signals()...)
	if notified != nil {
		notified()
	}
	execute = func() error {
		defer signal.Stop(c)
		for {
			select { // a stop wins over a waiting signal
			case <-ctx.Done():
				return nil
			case <-stop:
				return nil
			default:
			}
			select {
			case <-ctx.Done():
				return nil
			case <-stop:
				return nil
			case sig := <-c:
				handle(sig, ActionOf(sig))
			}
		}
	}
	interrupt = func(error) {
		once.Do(func() {
			signal.Stop(c)
			close(stop)
		})
	}
	return execute, interrupt
}
