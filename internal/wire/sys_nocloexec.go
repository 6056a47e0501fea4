//go:build unix && !(dragonfly || freebsd || linux || netbsd || openbsd)

package wire

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// These systems lack SOCK_CLOEXEC or MSG_CMSG_CLOEXEC (or, on aix,
// F_DUPFD_CLOEXEC), so close-on-exec is set after the fact. Holding
// syscall.ForkLock keeps os/exec from forking in between where we create
// the descriptor; received descriptors have a small window nothing closes.

const recvFlags = 0

func socketpair() ([2]int, error) {
	syscall.ForkLock.RLock()
	defer syscall.ForkLock.RUnlock()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err == nil {
		unix.CloseOnExec(fds[0])
		unix.CloseOnExec(fds[1])
	}
	return fds, err
}

func dupCloexec(fd int) (int, error) {
	syscall.ForkLock.RLock()
	defer syscall.ForkLock.RUnlock()
	d, err := unix.Dup(fd)
	if err == nil {
		unix.CloseOnExec(d)
	}
	return d, err
}

func setCloexec(fds []int) {
	for _, fd := range fds {
		unix.CloseOnExec(fd)
	}
}
