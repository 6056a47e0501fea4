package control

import (
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

const peerCredSupported = true

// peerCred returns the uid of the process at the other end of c, as it was
// when it connected (LOCAL_PEERCRED). The pid is 0, unknown: x/sys/unix's
// Xucred does not expose FreeBSD 13's cr_pid.
func peerCred(c syscall.RawConn) (uid, pid int, err error) {
	var cred *unix.Xucred
	if cerr := c.Control(func(fd uintptr) {
		cred, err = unix.GetsockoptXucred(int(fd), unix.SOL_LOCAL, unix.LOCAL_PEERCRED)
	}); cerr != nil {
		return -1, 0, cerr
	}
	if err != nil {
		return -1, 0, os.NewSyscallError("getsockopt", err)
	}
	return int(cred.Uid), 0, nil
}
