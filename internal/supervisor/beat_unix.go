//go:build unix

package supervisor

import (
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// dgramBeat is the parent's end of a heartbeat socketpair: datagrams of
// 8 bytes, a ping's sequence number, which the worker echoes.
type dgramBeat struct {
	uc *net.UnixConn
	rc syscall.RawConn
}

// newBeat returns the parent's end and the raw descriptor of the worker's.
func newBeat() (*dgramBeat, int, error) {
	syscall.ForkLock.RLock() // no fork between socketpair and close-on-exec
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM, 0)
	if err == nil {
		unix.CloseOnExec(fds[0])
		unix.CloseOnExec(fds[1])
	}
	syscall.ForkLock.RUnlock()
	if err != nil {
		return nil, -1, os.NewSyscallError("socketpair", err)
	}
	f := os.NewFile(uintptr(fds[0]), "forkline-heartbeat")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		unix.Close(fds[1])
		return nil, -1, fmt.Errorf("prefork: heartbeat socket: %w", err)
	}
	uc := c.(*net.UnixConn)
	rc, err := uc.SyscallConn()
	if err != nil {
		uc.Close()
		unix.Close(fds[1])
		return nil, -1, err
	}
	return &dgramBeat{uc: uc, rc: rc}, fds[1], nil
}

// Ping sends one datagram without waiting: a worker that does not read
// loses pings, which is what the verdict counts.
func (b *dgramBeat) Ping(seq uint64) error {
	var p [8]byte
	binary.LittleEndian.PutUint64(p[:], seq)
	var werr error
	err := b.rc.Write(func(fd uintptr) bool {
		_, werr = unix.Write(int(fd), p[:])
		return true
	})
	if err != nil {
		return err
	}
	return werr
}

func (b *dgramBeat) Pong() (uint64, error) {
	var p [8]byte
	for {
		n, err := b.uc.Read(p[:])
		if err != nil {
			return 0, err
		}
		if n == len(p) {
			return binary.LittleEndian.Uint64(p[:]), nil
		}
	}
}

func (b *dgramBeat) Close() error { return b.uc.Close() }
