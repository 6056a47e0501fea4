//go:build !unix

package supervisor

import "log/slog"

func newExecStarter(*slog.Logger, int) (Starter, error) { return nil, errUnsupported }
