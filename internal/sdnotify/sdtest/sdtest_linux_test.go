package sdtest_test

import (
	"context"
	"os"
	"os/exec"
	"slices"
	"testing"
	"time"

	"github.com/forkline/forkline/internal/sdnotify/sdtest"
)

// TestSystemdNotify checks the fake against the real client: systemd-notify
// (v252 here) sends its message, then BARRIER=1 with a descriptor, and
// exits successfully only once the manager has closed that descriptor (it
// gives up after 5s otherwise).
func TestSystemdNotify(t *testing.T) {
	bin, err := exec.LookPath("systemd-notify")
	if err != nil {
		t.Skip("no systemd-notify:", err)
	}
	for name, newManager := range map[string]func(testing.TB) *sdtest.Manager{"path": sdtest.New, "abstract": sdtest.NewAbstract} {
		t.Run(name, func(t *testing.T) {
			m := newManager(t)
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, "--ready", "--status=hello")
			cmd.Env = append(os.Environ(), m.Env()...)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("systemd-notify: %v\n%s", err, out)
			}
			child := cmd.Process.Pid

			msg, err := m.Next(ctx)
			if err != nil {
				t.Fatal(err)
			}
			// systemd-notify speaks for its parent when allowed to (as
			// root), else for itself.
			if want := []string{"READY=1", "STATUS=hello"}; !slices.Equal(msg.Lines, want) || msg.PID != os.Getpid() && msg.PID != child {
				t.Errorf("first message %q from pid %d; want %q from %d or %d", msg.Lines, msg.PID, want, os.Getpid(), child)
			}
			if v, _ := msg.Value("STATUS"); v != "hello" {
				t.Errorf(`Value("STATUS") = %q; want "hello"`, v)
			}
			msg = m.Wait(ctx, "BARRIER=1")
			if msg.PID != child || msg.FDs != nil {
				t.Errorf("barrier from pid %d with FDs %v; want pid %d, FDs nil (closed)", msg.PID, msg.FDs, child)
			}
		})
	}
}
