package prefork

import "syscall"

// sysProcAttr asks Linux to send SIGTERM to a worker when the parent dies,
// as well as the EOF on its channel that every platform has. The worker
// treats a SIGTERM whose parent is gone as "parent died".
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}
