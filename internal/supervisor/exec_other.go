//go:build !unix

package supervisor

import (
	"log/slog"
	"time"
)

func newExecStarter(*slog.Logger, int, []string, string, string) (Starter, error) {
	return nil, errUnsupported
}

// Command is forkline run's program; workers need descriptor passing, so it
// runs nowhere here.
type Command struct {
	Argv       []string
	ReadyAfter time.Duration
	Output     func(id, pid, gen int, stderr bool, line string)
}

func newCommandStarter(*slog.Logger, Command, int, []Address, string, string) (Starter, error) {
	return nil, errUnsupported
}
