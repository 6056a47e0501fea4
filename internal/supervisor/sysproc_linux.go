package supervisor

import "syscall"

// sysProcAttr puts each worker in a process group of its own (see
// exec_unix.go), with cred, if not nil, as its user (cred_unix.go). It
// sets no parent-death signal: Linux ties that signal to the thread that
// forked the child, not the process, and an upgrade's exec
// (upgrade_linux.go) ends every thread but the one that execs, which would
// signal the workers forked from the others. A worker learns its parent's
// death from the EOF on its channel, on every platform: the parent's end
// is close-on-exec and only the parent holds it.
func sysProcAttr(cred *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Credential: cred}
}

// commandProcAttr is sysProcAttr for forkline run's workers, which have no
// channel whose EOF would tell them that the parent died: Linux sends them
// SIGTERM (their drain) then. Their parent is never upgraded in place, so
// the thread that forked them (the spawner's) lives as long as it does.
func commandProcAttr(cred *syscall.Credential) *syscall.SysProcAttr {
	a := sysProcAttr(cred)
	a.Pdeathsig = syscall.SIGTERM
	return a
}
