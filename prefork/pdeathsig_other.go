//go:build unix && !linux

package prefork

import "syscall"

// sysProcAttr has nothing to add here: a worker learns of its parent's death
// by EOF on its channel.
func sysProcAttr() *syscall.SysProcAttr { return nil }
