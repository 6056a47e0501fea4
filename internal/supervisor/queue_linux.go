package supervisor

import (
	"os"

	"golang.org/x/sys/unix"
)

// queueLen is the number of connections waiting in a listening socket's
// accept queue (TCP_INFO's tcpi_unacked on a listener).
func queueLen(fd int) (int, error) {
	ti, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		return 0, err
	}
	return int(ti.Unacked), nil
}

// stopListening takes a listening socket out of its reuseport group at
// once: shutdown(SHUT_RD) on a listener is the kernel's "stop listening".
func stopListening(fd int) error {
	return os.NewSyscallError("shutdown", unix.Shutdown(fd, unix.SHUT_RD))
}

// listening reports whether a socket listens (SO_ACCEPTCONN).
func listening(fd int) bool {
	v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
	return err == nil && v == 1
}
