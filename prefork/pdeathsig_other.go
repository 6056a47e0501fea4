//go:build unix && !linux

package prefork

import "syscall"

// sysProcAttr puts each worker in a process group of its own (see
// spawn_unix.go); a worker learns of its parent's death by EOF on its
// channel.
func sysProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }
