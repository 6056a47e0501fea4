// Package sdnotify implements the service side of systemd's protocols
// without a library: notifications to the manager (sd_notify(3)), the file
// descriptor store, the watchdog, and socket activation (sd_listen_fds(3)).
//
// forkline hand-rolls them because coreos/go-systemd cannot attach
// descriptors to a notification, which FDSTORE=1 needs, and pulls in godbus;
// the protocols are a datagram of KEY=VALUE lines and a few variables, and
// systemd promises to keep them stable.
//
// # Environment
//
// [FromEnv] and [WatchdogInterval] read the environment and leave it alone,
// so that they can be called again; [Listeners] unsets the LISTEN_*
// variables, because the descriptors they describe can be taken only once.
// A process started by the caller must see none of them: build its
// environment with [CleanEnv].
//
// # Platforms
//
// systemd exists on Linux only. Elsewhere [FromEnv] and [Listeners] return
// nothing when their variables are absent, and an error satisfying
// errors.Is(err, errors.ErrUnsupported) when they are present; [CleanEnv]
// and [WatchdogInterval] work everywhere.
package sdnotify

import (
	"fmt"
	"math"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

const (
	// maxAddr is the longest NOTIFY_SOCKET: sun_path is 108 bytes on Linux,
	// one of them the terminating NUL.
	maxAddr = 107
	// maxMessage is the longest datagram systemd reads (PIPE_BUF); it
	// ignores or truncates longer ones, so they are refused here instead.
	maxMessage = 4096
	// maxName is the longest descriptor name systemd accepts (FDNAME_MAX).
	maxName = 255
	// firstFD is where socket activation's descriptors start
	// (SD_LISTEN_FDS_START).
	firstFD = 3
)

// A Notifier sends notifications to the service manager that started the
// process, over one unix datagram socket (close-on-exec) kept open until
// [Notifier.Close].
//
// Each datagram is addressed to NOTIFY_SOCKET when it is sent, rather than
// through a connected socket, so that notifications still arrive after the
// manager re-executes itself and binds its socket again (systemctl
// daemon-reexec).
//
// A send waits at most about 100ms for room in the manager's queue, then
// fails (EAGAIN): a supervisor loop must not hang on a wedged manager, and
// the next watchdog ping or status is a retry.
//
// A nil *Notifier, which [FromEnv] returns when NOTIFY_SOCKET is unset, is
// valid: its methods check their arguments as usual and send nothing. All
// methods are safe for concurrent use; each is one datagram, which the
// manager receives whole or not at all.
type Notifier struct {
	addr string       // NOTIFY_SOCKET
	mu   sync.RWMutex // read-held by sends, write-held by Close
	fd   int          // -1 once closed
}

// FromEnv returns a Notifier for $NOTIFY_SOCKET: a filesystem path, or
// "@name" for Linux's abstract namespace. It returns nil and no error when
// the variable is unset or empty, and an error naming the variable when its
// value cannot be a unix socket address (relative, too long, or systemd's
// newer vsock: form). The variable is left in place.
func FromEnv() (*Notifier, error) {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return nil, nil
	}
	if len(addr) < 2 || addr[0] != '/' && addr[0] != '@' {
		return nil, fmt.Errorf("sdnotify: NOTIFY_SOCKET=%q: not an absolute path or an @abstract name", addr)
	}
	if len(addr) > maxAddr {
		return nil, fmt.Errorf("sdnotify: NOTIFY_SOCKET=%q: longer than %d bytes", addr, maxAddr)
	}
	fd, err := socket()
	if err != nil {
		return nil, fmt.Errorf("sdnotify: NOTIFY_SOCKET=%q: %w", addr, err)
	}
	return &Notifier{addr: addr, fd: fd}, nil
}

// Send sends lines, joined by newlines, as one notification, for example
// Send("READY=1", "STATUS=serving"). A line must not contain a newline, a
// carriage return (systemd splits at both) or a NUL, and the message must
// fit in 4096 bytes. After Close, Send returns an error wrapping
// [net.ErrClosed].
func (n *Notifier) Send(lines ...string) error {
	return n.SendFDs(nil, lines...)
}

// SendFDs is [Notifier.Send] with descriptors attached (SCM_RIGHTS). The
// kernel gives the manager its own copies: the caller keeps and may close
// fds once SendFDs returns. Take a socket's descriptor with sockfd.DupFD or
// inside SyscallConn().Control, not with (*os.File).Fd, which makes the
// socket blocking. systemd closes descriptors that come without
// FDSTORE=1 (see [Notifier.StoreFDs]).
func (n *Notifier) SendFDs(fds []int, lines ...string) error {
	for _, l := range lines {
		if strings.ContainsAny(l, "\n\r\x00") {
			return fmt.Errorf("sdnotify: line %q contains a newline, carriage return or NUL", l)
		}
	}
	msg := strings.Join(lines, "\n")
	if len(msg) > maxMessage {
		return fmt.Errorf("sdnotify: a notification of %d bytes: at most %d", len(msg), maxMessage)
	}
	if n == nil {
		return nil
	}
	n.mu.RLock()
	defer n.mu.RUnlock()
	if n.fd < 0 {
		return fmt.Errorf("sdnotify: notifying %s: %w", n.addr, net.ErrClosed)
	}
	if err := sendmsg(n.fd, n.addr, []byte(msg), fds); err != nil {
		return fmt.Errorf("sdnotify: notifying %s: %w", n.addr, err)
	}
	return nil
}

// Ready sends READY=1: start-up, or a reload announced by
// [Notifier.Reloading], is complete.
func (n *Notifier) Ready() error { return n.Send("READY=1") }

// Reloading sends RELOADING=1 with MONOTONIC_USEC, the time on
// CLOCK_MONOTONIC, in the same datagram, as Type=notify-reload (systemd 253
// and later) requires; send [Notifier.Ready] when the reload is done.
func (n *Notifier) Reloading() error {
	if n == nil {
		return nil
	}
	usec, err := monotonicUsec()
	if err != nil {
		return fmt.Errorf("sdnotify: reading CLOCK_MONOTONIC: %w", err)
	}
	return n.Send("RELOADING=1", "MONOTONIC_USEC="+strconv.FormatInt(usec, 10))
}

// Stopping sends STOPPING=1: the service is shutting down.
func (n *Notifier) Stopping() error { return n.Send("STOPPING=1") }

// Status sends STATUS=s, the one line that systemctl status shows.
func (n *Notifier) Status(s string) error { return n.Send("STATUS=" + s) }

// ExtendTimeout sends EXTEND_TIMEOUT_USEC: the manager's start, reload or
// stop timeout is extended to d from now. d must not be negative.
func (n *Notifier) ExtendTimeout(d time.Duration) error {
	if d < 0 {
		return fmt.Errorf("sdnotify: extending the timeout by %v: negative", d)
	}
	return n.Send("EXTEND_TIMEOUT_USEC=" + strconv.FormatInt(d.Microseconds(), 10))
}

// Watchdog sends WATCHDOG=1, the keep-alive ping; see [WatchdogInterval].
func (n *Notifier) Watchdog() error { return n.Send("WATCHDOG=1") }

// StoreFDs sends FDSTORE=1 with FDNAME=name and fds attached: the manager
// keeps them (when the unit sets FileDescriptorStoreMax=) and passes them
// back, named, to the next instance of the service through socket
// activation ([Listeners]). Storing under a name already in use adds to it
// (systemd ignores a descriptor it already holds); to replace, call
// [Notifier.RemoveFDs] first.
//
// name must be 1 to 255 printable ASCII characters other than ':', the
// separator of LISTEN_FDNAMES; systemd would otherwise store the
// descriptors as "stored".
func (n *Notifier) StoreFDs(name string, fds ...int) error {
	if err := checkName(name); err != nil {
		return err
	}
	if len(fds) == 0 {
		return fmt.Errorf("sdnotify: storing %q: no descriptors", name)
	}
	return n.SendFDs(fds, "FDSTORE=1", "FDNAME="+name)
}

// RemoveFDs sends FDSTOREREMOVE=1 with FDNAME=name: the manager closes
// every descriptor it stores under name. name is checked as by
// [Notifier.StoreFDs].
func (n *Notifier) RemoveFDs(name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	return n.Send("FDSTOREREMOVE=1", "FDNAME="+name)
}

// Close closes the socket; later sends fail. It waits for sends in
// progress, and can safely be called more than once.
func (n *Notifier) Close() error {
	if n == nil {
		return nil
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.fd < 0 {
		return nil
	}
	err := closeSocket(n.fd)
	n.fd = -1
	return err
}

func checkName(name string) error {
	if name == "" || len(name) > maxName {
		return fmt.Errorf("sdnotify: a descriptor name of %d bytes: must be 1 to %d", len(name), maxName)
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c < ' ' || c > '~' || c == ':' {
			return fmt.Errorf("sdnotify: descriptor name %q: only printable ASCII other than ':'", name)
		}
	}
	return nil
}

// WatchdogInterval returns how often to send [Notifier.Watchdog]: half of
// WATCHDOG_USEC, as sd_watchdog_enabled(3) advises, so that one late ping
// is not fatal. It returns 0 and no error when there is no watchdog for
// this process: WATCHDOG_USEC unset or empty, or WATCHDOG_PID set to
// another process's pid. A value that does not parse (or WATCHDOG_USEC=0)
// is an error naming the variable. The variables are left in place.
func WatchdogInterval() (time.Duration, error) {
	s := os.Getenv("WATCHDOG_USEC")
	if s == "" {
		return 0, nil
	}
	usec, err := strconv.ParseInt(s, 10, 64)
	if err != nil || usec <= 0 || usec > math.MaxInt64/int64(time.Microsecond) {
		return 0, fmt.Errorf("sdnotify: WATCHDOG_USEC=%q: not a positive number of microseconds", s)
	}
	if p := os.Getenv("WATCHDOG_PID"); p != "" {
		pid, err := strconv.Atoi(p)
		if err != nil || pid <= 0 {
			return 0, fmt.Errorf("sdnotify: WATCHDOG_PID=%q: not a pid", p)
		}
		if pid != os.Getpid() {
			return 0, nil
		}
	}
	return time.Duration(usec) * time.Microsecond / 2, nil
}

// A File is a descriptor passed by socket activation.
type File struct {
	FD   int    // 3, 4, ...; close-on-exec, owned by the caller
	Name string // from LISTEN_FDNAMES: FileDescriptorName=, FDNAME=; "unknown" without it
}

// Listeners returns the descriptors that the service manager passed to
// this process: LISTEN_FDS of them from descriptor 3, when LISTEN_PID is
// this process's pid, named by LISTEN_FDNAMES (colon-separated, one name per
// descriptor; "unknown" for each when the variable is absent, as systemd
// does). It marks each close-on-exec, so that a child inherits it only when
// passed explicitly.
//
// It returns nothing when LISTEN_PID or LISTEN_FDS is unset or empty, or
// LISTEN_PID is another process's (the variables were meant for the
// process that started this one). A value that does not parse, a number of
// names that is not LISTEN_FDS, or a descriptor that is not open is an error
// naming the variable.
//
// Whatever it returns, Listeners unsets LISTEN_PID, LISTEN_FDS and
// LISTEN_FDNAMES, so a second call returns nothing. It is not safe to call
// concurrently with itself.
func Listeners() ([]File, error) {
	pidS, fdsS := os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDS")
	namesS, named := os.LookupEnv("LISTEN_FDNAMES")
	for _, v := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		os.Unsetenv(v)
	}
	if pidS == "" || fdsS == "" {
		return nil, nil
	}
	pid, err := strconv.Atoi(pidS)
	if err != nil || pid <= 0 {
		return nil, fmt.Errorf("sdnotify: LISTEN_PID=%q: not a pid", pidS)
	}
	if pid != os.Getpid() {
		return nil, nil
	}
	n, err := strconv.Atoi(fdsS)
	if err != nil || n < 0 || n > math.MaxInt32-firstFD {
		return nil, fmt.Errorf("sdnotify: LISTEN_FDS=%q: not a number of descriptors", fdsS)
	}
	var names []string
	if named {
		// strings.Split keeps empty names where systemd's strv_split would
		// drop them: the count then still matches the descriptors'.
		if names = strings.Split(namesS, ":"); len(names) != n {
			return nil, fmt.Errorf("sdnotify: LISTEN_FDNAMES=%q names %d descriptors, LISTEN_FDS=%d", namesS, len(names), n)
		}
	}
	var files []File
	for i := range n {
		f := File{FD: firstFD + i, Name: "unknown"}
		if named {
			f.Name = names[i]
		}
		if err := cloexec(f.FD); err != nil {
			return nil, fmt.Errorf("sdnotify: LISTEN_FDS=%d: descriptor %d: %w", n, f.FD, err)
		}
		files = append(files, f)
	}
	return files, nil
}

// managerOnly are the variables that describe the manager's relation to
// this process.
var managerOnly = []string{"NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "WATCHDOG_USEC", "WATCHDOG_PID"}

// CleanEnv returns a copy of env (KEY=VALUE entries, as from os.Environ)
// without the variables through which the service manager speaks to this
// process: NOTIFY_SOCKET, LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES,
// WATCHDOG_USEC and WATCHDOG_PID. A child that saw them could notify, or
// adopt descriptors, in this process's name. env is not modified.
func CleanEnv(env []string) []string {
	out := make([]string, 0, len(env))
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		if !slices.Contains(managerOnly, name) {
			out = append(out, kv)
		}
	}
	return out
}
