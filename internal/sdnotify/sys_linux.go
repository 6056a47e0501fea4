package sdnotify

import (
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// sendTimeout bounds how long a send waits for room in the manager's queue
// (SO_SNDTIMEO): long enough to ride out a burst, short enough for a
// supervisor loop.
const sendTimeout = 100 * time.Millisecond

func socket() (int, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, os.NewSyscallError("socket", err)
	}
	tv := unix.NsecToTimeval(sendTimeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv); err != nil {
		unix.Close(fd)
		return -1, os.NewSyscallError("setsockopt", err)
	}
	return fd, nil
}

func sendmsg(fd int, addr string, msg []byte, fds []int) error {
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	// x/sys turns the leading '@' of an abstract name into its NUL.
	to := &unix.SockaddrUnix{Name: addr}
	// A socket with a send timeout is not restarted after a signal
	// (signal(7)), and a supervisor gets SIGCHLD: retry, within the bound.
	deadline := time.Now().Add(sendTimeout)
	for {
		err := unix.Sendmsg(fd, msg, oob, to, unix.MSG_NOSIGNAL)
		if err == unix.EINTR && time.Now().Before(deadline) {
			continue
		}
		if err != nil {
			return os.NewSyscallError("sendmsg", err)
		}
		return nil
	}
}

func closeSocket(fd int) error {
	return os.NewSyscallError("close", unix.Close(fd))
}

func monotonicUsec() (int64, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0, os.NewSyscallError("clock_gettime", err)
	}
	return ts.Nano() / 1e3, nil
}

func cloexec(fd int) error {
	_, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC)
	return os.NewSyscallError("fcntl", err)
}
