//go:build unix && !linux

package supervisor

import "syscall"

// sysProcAttr puts each worker in a process group of its own (see
// exec_unix.go); a worker learns of its parent's death by EOF on its
// channel.
func sysProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }
