package supervisor

import "syscall"

// sysProcAttr puts each worker in a process group of its own (see
// exec_unix.go) and asks Linux to send it SIGTERM when the parent dies, as
// well as the EOF on its channel that every platform has. The worker
// treats a SIGTERM whose parent is gone as "parent died". cred, if not
// nil, is the user it runs as (cred_unix.go): a change of credentials
// clears the parent-death signal, and os/exec's child sets it after it has
// switched, so it holds.
func sysProcAttr(cred *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM, Credential: cred}
}
