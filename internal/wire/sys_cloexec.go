//go:build dragonfly || freebsd || linux || netbsd || openbsd

package wire

import "golang.org/x/sys/unix"

// These systems create descriptors close-on-exec atomically.

const recvFlags = unix.MSG_CMSG_CLOEXEC

func socketpair() ([2]int, error) {
	return unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
}

func dupCloexec(fd int) (int, error) {
	return unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
}

func setCloexec([]int) {}
