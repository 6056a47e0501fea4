//go:build !unix

package supervisor

import "log/slog"

func newExecStarter(*slog.Logger, int, []string) (Starter, error) { return nil, errUnsupported }
