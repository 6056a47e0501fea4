package supervisor

import "syscall"

// sysProcAttr puts each worker in a process group of its own (see
// exec_unix.go) and asks Linux to send it SIGTERM when the parent dies, as
// well as the EOF on its channel that every platform has. The worker
// treats a SIGTERM whose parent is gone as "parent died".
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}
