package sdnotify_test

import (
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/forkline/forkline/internal/sdnotify"
)

func TestCleanEnv(t *testing.T) {
	env := []string{
		"PATH=/bin", "NOTIFY_SOCKET=/run/systemd/notify", "LISTEN_FDS=2", "HOME=/root",
		"LISTEN_PID=1", "LISTEN_FDNAMES=a:b", "WATCHDOG_USEC=1000", "WATCHDOG_PID=1",
		"NOTIFY_SOCKETS=kept", "LISTEN_FDS", "EMPTY=",
	}
	orig := slices.Clone(env)
	got := sdnotify.CleanEnv(env)
	if want := []string{"PATH=/bin", "HOME=/root", "NOTIFY_SOCKETS=kept", "EMPTY="}; !slices.Equal(got, want) {
		t.Errorf("CleanEnv = %q; want %q", got, want)
	}
	if !slices.Equal(env, orig) {
		t.Errorf("CleanEnv modified its argument: %q", env)
	}
}

func TestWatchdogInterval(t *testing.T) {
	us, other := strconv.Itoa(os.Getpid()), strconv.Itoa(os.Getpid()+1)
	for _, tc := range []struct {
		name, usec, pid string
		want            time.Duration
		err             string // a substring of the error; "" for none
	}{
		{name: "unset"},
		{name: "any pid", usec: "30000000", want: 15 * time.Second},
		{name: "our pid", usec: "1000", pid: us, want: 500 * time.Microsecond},
		{name: "another pid", usec: "1000", pid: other},
		{name: "zero", usec: "0", err: "WATCHDOG_USEC"},
		{name: "negative", usec: "-1", err: "WATCHDOG_USEC"},
		{name: "not a number", usec: "5s", err: "WATCHDOG_USEC"},
		{name: "overflow", usec: "18446744073709551615", err: "WATCHDOG_USEC"},
		{name: "bad pid", usec: "1000", pid: "me", err: "WATCHDOG_PID"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("WATCHDOG_USEC", tc.usec)
			t.Setenv("WATCHDOG_PID", tc.pid)
			got, err := sdnotify.WatchdogInterval()
			if got != tc.want || !errorContains(err, tc.err) {
				t.Errorf("WatchdogInterval() = %v, %v; want %v, error with %q", got, err, tc.want, tc.err)
			}
		})
	}
}

func TestFromEnv(t *testing.T) {
	t.Run("unset", func(t *testing.T) {
		t.Setenv("NOTIFY_SOCKET", "")
		os.Unsetenv("NOTIFY_SOCKET")
		if n, err := sdnotify.FromEnv(); n != nil || err != nil {
			t.Errorf("FromEnv() = %v, %v; want nil, nil", n, err)
		}
	})
	for _, v := range []string{"", "relative/notify", "notify", "@", "/", "vsock:2:1234", "/" + strings.Repeat("x", 107)} {
		t.Run(strconv.Quote(v), func(t *testing.T) {
			t.Setenv("NOTIFY_SOCKET", v)
			n, err := sdnotify.FromEnv()
			if n != nil {
				n.Close()
			}
			if v == "" {
				if n != nil || err != nil {
					t.Errorf("FromEnv() = %v, %v; want nil, nil", n, err)
				}
				return
			}
			if n != nil || !errorContains(err, "NOTIFY_SOCKET=") {
				t.Errorf("FromEnv() = %v, %v; want an error naming NOTIFY_SOCKET", n, err)
			}
		})
	}
}

// A nil Notifier checks its arguments and sends nothing.
func TestNilNotifier(t *testing.T) {
	var n *sdnotify.Notifier
	for name, err := range map[string]error{
		"Send":          n.Send("A=1"),
		"SendFDs":       n.SendFDs([]int{0}, "A=1"),
		"Ready":         n.Ready(),
		"Reloading":     n.Reloading(),
		"Stopping":      n.Stopping(),
		"Status":        n.Status("ok"),
		"ExtendTimeout": n.ExtendTimeout(time.Second),
		"Watchdog":      n.Watchdog(),
		"StoreFDs":      n.StoreFDs("http", 0),
		"RemoveFDs":     n.RemoveFDs("http"),
		"Close":         n.Close(),
	} {
		if err != nil {
			t.Errorf("nil Notifier's %s: %v", name, err)
		}
	}
}

func TestInvalid(t *testing.T) {
	var n *sdnotify.Notifier
	for name, err := range map[string]error{
		"newline":           n.Send("STATUS=a\nREADY=1"),
		"carriage return":   n.Status("a\rb"),
		"NUL":               n.Send("A=\x00"),
		"too long":          n.Status(strings.Repeat("x", 4096)),
		"negative timeout":  n.ExtendTimeout(-time.Second),
		"no descriptors":    n.StoreFDs("http"),
		"empty name":        n.StoreFDs("", 0),
		"colon":             n.StoreFDs("a:b", 0),
		"control character": n.StoreFDs("a\tb", 0),
		"DEL":               n.StoreFDs("a\x7f", 0),
		"not ASCII":         n.StoreFDs("café", 0),
		"name too long":     n.StoreFDs(strings.Repeat("x", 256), 0),
		"remove colon":      n.RemoveFDs("a:b"),
	} {
		if err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if err := n.StoreFDs(strings.Repeat("x", 255)+"", 0); err != nil {
		t.Errorf("a name of 255 characters: %v", err)
	}
	if err := n.Status(strings.Repeat("x", 4096-len("STATUS="))); err != nil {
		t.Errorf("a message of 4096 bytes: %v", err)
	}
}

// TestListenersInvalid covers what Listeners decides before it touches a
// descriptor, so it runs in the test process; descriptors are in
// TestListeners, in a child.
func TestListenersInvalid(t *testing.T) {
	us, other := strconv.Itoa(os.Getpid()), strconv.Itoa(os.Getpid()+1)
	for _, tc := range []struct {
		name, pid, fds, names string
		err                   string // a substring of the error; "" for none
	}{
		{name: "unset"},
		{name: "no LISTEN_FDS", pid: us},
		{name: "no LISTEN_PID", fds: "2"},
		{name: "another pid", pid: other, fds: "2", names: "a"},
		{name: "zero", pid: us, fds: "0"},
		{name: "bad pid", pid: "init", fds: "1", err: `LISTEN_PID="init"`},
		{name: "negative pid", pid: "-1", fds: "1", err: `LISTEN_PID="-1"`},
		{name: "bad count", pid: us, fds: "two", err: `LISTEN_FDS="two"`},
		{name: "negative count", pid: us, fds: "-2", err: `LISTEN_FDS="-2"`},
		{name: "too few names", pid: us, fds: "2", names: "http", err: `LISTEN_FDNAMES="http"`},
		{name: "too many names", pid: us, fds: "1", names: "a:b", err: `LISTEN_FDNAMES="a:b"`},
		{name: "empty names", pid: us, fds: "2", names: "", err: `LISTEN_FDNAMES=""`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range map[string]string{"LISTEN_PID": tc.pid, "LISTEN_FDS": tc.fds, "LISTEN_FDNAMES": tc.names} {
				t.Setenv(k, v)
				if v == "" && (k != "LISTEN_FDNAMES" || tc.name != "empty names") {
					os.Unsetenv(k)
				}
			}
			files, err := sdnotify.Listeners()
			if files != nil || !errorContains(err, tc.err) {
				t.Errorf("Listeners() = %v, %v; want nil, error with %q", files, err, tc.err)
			}
			for _, k := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
				if v, ok := os.LookupEnv(k); ok {
					t.Errorf("after Listeners, %s=%q is still set", k, v)
				}
			}
		})
	}
}

// errorContains reports whether err contains want, or is nil when want
// is "".
func errorContains(err error, want string) bool {
	if want == "" {
		return err == nil
	}
	return err != nil && strings.Contains(err.Error(), want)
}
