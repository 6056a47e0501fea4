//go:build unix && !linux

package supervisor

import "syscall"

// sysProcAttr puts each worker in a process group of its own (see
// exec_unix.go), as the user cred says if it is not nil (cred_unix.go); a
// worker learns of its parent's death by EOF on its channel.
func sysProcAttr(cred *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Credential: cred}
}

// commandProcAttr is sysProcAttr for forkline run's workers. Without a
// parent-death signal here, a worker whose parent was killed runs on until
// someone stops it.
func commandProcAttr(cred *syscall.Credential) *syscall.SysProcAttr { return sysProcAttr(cred) }
