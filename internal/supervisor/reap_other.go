//go:build unix && !linux

package supervisor

import "log/slog"

// reaper is Linux's (reap_linux.go); elsewhere a PID 1 parent leaves
// orphans to whatever init the system has.
type reaper struct{}

func startReaper(*slog.Logger, *spawner) *reaper { return nil }
func (r *reaper) started(int)                    {}
func (r *reaper) forget(int)                     {}
func (r *reaper) stop()                          {}
