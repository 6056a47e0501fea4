package control

import (
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

const peerCredSupported = true

// peerCred returns the uid and pid of the process at the other end of c,
// as they were when it connected (SO_PEERCRED).
func peerCred(c syscall.RawConn) (uid, pid int, err error) {
	var cred *unix.Ucred
	if cerr := c.Control(func(fd uintptr) {
		cred, err = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); cerr != nil {
		return -1, 0, cerr
	}
	if err != nil {
		return -1, 0, os.NewSyscallError("getsockopt", err)
	}
	return int(cred.Uid), int(cred.Pid), nil
}
