//go:build unix

package signals

import (
	"context"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestTable(t *testing.T) {
	for _, tc := range []struct {
		sig  unix.Signal
		want Action
	}{
		{unix.SIGHUP, Reload},
		{unix.SIGINT, Stop},
		{unix.SIGTERM, Stop},
		{unix.SIGQUIT, Quit},
		{unix.SIGTTIN, ScaleUp},
		{unix.SIGTTOU, ScaleDown},
		{unix.SIGUSR1, None},
		{unix.SIGKILL, None},
		{unix.SIGCHLD, None},
	} {
		t.Run(unix.SignalName(tc.sig), func(t *testing.T) {
			if got := ActionOf(tc.sig); got != tc.want {
				t.Errorf("ActionOf(%v) = %v, want %v", tc.sig, got, tc.want)
			}
		})
	}
	if got := ActionOf(os.Interrupt); got != Stop {
		t.Errorf("ActionOf(os.Interrupt) = %v, want stop", got)
	}
}

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name string
		want os.Signal
	}{
		{"HUP", unix.SIGHUP},
		{"SIGHUP", unix.SIGHUP},
		{"hup", unix.SIGHUP},
		{"sighup", unix.SIGHUP},
		{"SigHup", unix.SIGHUP},
		{"INT", unix.SIGINT},
		{"SIGINT", unix.SIGINT},
		{"quit", unix.SIGQUIT},
		{"SIGTERM", unix.SIGTERM},
		{"ttin", unix.SIGTTIN},
		{"SIGTTOU", unix.SIGTTOU},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse(tc.name)
			if err != nil || got != tc.want {
				t.Errorf("Parse(%q) = %v, %v; want %v", tc.name, got, err, tc.want)
			}
		})
	}
	_, err := Parse("FOO")
	if want := `signals: unknown signal "FOO" (known: HUP, INT, QUIT, TERM, TTIN, TTOU, USR2)`; err == nil || err.Error() != want {
		t.Errorf("Parse(FOO) error = %v, want %q", err, want)
	}
}

type delivery struct {
	sig    os.Signal
	action Action
}

// A signal sent after Handler returned but before execute runs (the actors
// of a run.Group start in any order) waits for execute: it neither takes
// its default action nor is lost.
func TestSignalBeforeExecuteWaits(t *testing.T) {
	got := make(chan os.Signal, 1)
	notified := false
	execute, interrupt := handler(context.Background(), func(sig os.Signal, _ Action) {
		select {
		case got <- sig:
		default:
		}
	}, func() { notified = true })
	if !notified {
		t.Fatal("Handler returned before Notify")
	}
	if err := unix.Kill(os.Getpid(), unix.SIGHUP); err != nil {
		t.Fatal(err)
	}
	wait := start(t, execute)
	defer wait()
	defer interrupt(nil)
	select {
	case sig := <-got:
		if sig != unix.SIGHUP {
			t.Errorf("got %v, want SIGHUP", sig)
		}
	case <-time.After(watchdog):
		t.Fatal("the signal sent before execute was not delivered")
	}
}

// TestHandlerDelivers sends each handled signal to the test process itself
// and waits for handle to see it before sending the next, since identical
// pending signals coalesce and distinct ones are not delivered in the order
// sent.
func TestHandlerDelivers(t *testing.T) {
	got := make(chan delivery, 2*queue)
	ready := make(chan struct{})
	execute, interrupt := handler(context.Background(), func(sig os.Signal, a Action) {
		got <- delivery{sig, a} // buffered beyond anything the test sends
	}, func() { close(ready) })
	wait := start(t, execute)
	defer wait()
	defer interrupt(nil)
	select {
	case <-ready:
	case <-time.After(watchdog):
		t.Fatal("execute did not call Notify")
	}

	for _, want := range []delivery{
		{unix.SIGHUP, Reload},
		{unix.SIGTTIN, ScaleUp},
		{unix.SIGTTOU, ScaleDown},
		{unix.SIGHUP, Reload}, // again: one signal, one call
		{unix.SIGQUIT, Quit},
		{unix.SIGTERM, Stop},
		{unix.SIGINT, Stop},
		{unix.SIGINT, Stop},
	} {
		if err := unix.Kill(os.Getpid(), want.sig.(unix.Signal)); err != nil {
			t.Fatal(err)
		}
		select {
		case d := <-got:
			if d != want {
				t.Fatalf("handle(%v, %v), want handle(%v, %v)", d.sig, d.action, want.sig, want.action)
			}
		case <-time.After(watchdog):
			t.Fatalf("handle not called for %v", want.sig)
		}
	}
}

// TestHandleBlocksExecute checks that an interrupt that comes while handle
// runs is noticed once handle returns.
func TestHandleBlocksExecute(t *testing.T) {
	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	ready := make(chan struct{})
	execute, interrupt := handler(context.Background(), func(os.Signal, Action) {
		select {
		case entered <- struct{}{}:
		default:
		}
		<-release
	}, func() { close(ready) })
	wait := start(t, execute)
	select {
	case <-ready:
	case <-time.After(watchdog):
		t.Fatal("execute did not call Notify")
	}
	if err := unix.Kill(os.Getpid(), unix.SIGHUP); err != nil {
		t.Fatal(err)
	}
	select {
	case <-entered:
	case <-time.After(watchdog):
		t.Fatal("handle not called")
	}
	interrupt(nil)
	close(release)
	wait()
}
