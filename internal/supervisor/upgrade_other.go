//go:build !linux

package supervisor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
)

// Upgrading in place needs Linux (memfd, /proc/self/exe).
var errNoUpgrade = fmt.Errorf("prefork: upgrading the parent in place is Linux's, not %s: %w", runtime.GOOS, errors.ErrUnsupported)

type upgrade struct{ stage string }

// UpgradeHandoff is an upgrade's state as the new parent received it
// (Linux only).
type UpgradeHandoff struct{}

func (h *UpgradeHandoff) Carried(string) int         { return -1 }
func (h *UpgradeHandoff) Adopted()                   {}
func (h *UpgradeHandoff) Rollback(cause error) error { return cause }
func PendingUpgrade() (*UpgradeHandoff, error)       { return nil, nil }
func TakeEarlySignals() []os.Signal                  { return nil }
func (s *Supervisor) Upgrade(context.Context) error  { return errNoUpgrade }
func (s *Supervisor) requestUpgrade(done chan<- error) {
	if done != nil {
		done <- errNoUpgrade
	} else {
		s.log.Warn("cannot upgrade", "err", errNoUpgrade)
	}
}
func (s *Supervisor) beginUpgrade(w []chan<- error) { notify(w, errNoUpgrade) }
func (s *Supervisor) readerDetached(*worker)        {}
func (s *Supervisor) checkUpgrade() error           { return nil }
func (s *Supervisor) resumeUpgrade() error          { return nil }
func (h *UpgradeHandoff) inherited() []Inherited    { return nil }
