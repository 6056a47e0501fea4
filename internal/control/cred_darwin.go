package control

import (
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

const peerCredSupported = true

// peerCred returns the uid and pid of the process at the other end of c,
// as they were when it connected (LOCAL_PEERCRED, LOCAL_PEERPID).
func peerCred(c syscall.RawConn) (uid, pid int, err error) {
	var cred *unix.Xucred
	if cerr := c.Control(func(fd uintptr) {
		cred, err = unix.GetsockoptXucred(int(fd), unix.SOL_LOCAL, unix.LOCAL_PEERCRED)
		if err == nil {
			pid, _ = unix.GetsockoptInt(int(fd), unix.SOL_LOCAL, unix.LOCAL_PEERPID)
		}
	}); cerr != nil {
		return -1, 0, cerr
	}
	if err != nil {
		return -1, 0, os.NewSyscallError("getsockopt", err)
	}
	return int(cred.Uid), pid, nil
}
