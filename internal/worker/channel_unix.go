//go:build unix

package worker

import (
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/forkline/forkline/internal/wire"
)

// welcomeWait bounds the wait for the parent's first frame, which the
// parent writes before the worker starts: it is there, or this is not a
// forkline parent's channel.
const welcomeWait = 10 * time.Second

// openChannel returns the channel to the parent and the parent's welcome,
// after checking that there is a channel: the recorded parent is this
// process's parent, and descriptor 3 is a unix stream socket.
func openChannel(maxPayload int) (*wire.Conn, wire.Frame, error) {
	if self.parent == 0 || unix.Getppid() != self.parent {
		return nil, wire.Frame{}, ErrNoParent
	}
	if typ, err := unix.GetsockoptInt(wire.FDChannel, unix.SOL_SOCKET, unix.SO_TYPE); err != nil || typ != unix.SOCK_STREAM {
		return nil, wire.Frame{}, ErrNoParent
	}
	if sa, err := unix.Getsockname(wire.FDChannel); err != nil {
		return nil, wire.Frame{}, ErrNoParent
	} else if _, ok := sa.(*unix.SockaddrUnix); !ok {
		return nil, wire.Frame{}, ErrNoParent
	}
	conn, err := wire.NewConn(os.NewFile(wire.FDChannel, "forkline-channel"), wire.Options{MaxPayload: maxPayload})
	if err != nil {
		return nil, wire.Frame{}, err
	}
	conn.SetReadDeadline(time.Now().Add(welcomeWait))
	f, err := conn.Recv()
	conn.SetReadDeadline(time.Time{})
	if err != nil {
		conn.Close()
		return nil, wire.Frame{}, fmt.Errorf("%w (%v)", ErrNoParent, err)
	}
	return conn, f, nil
}

// listenerOf rebuilds a stream listener the parent handed over.
func listenerOf(fd int, l wire.Listener) (rawListener, error) {
	f := os.NewFile(uintptr(fd), "forkline-listener")
	defer f.Close()
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("prefork: worker listener %s: %w", l.Addr, err)
	}
	rl, ok := ln.(rawListener)
	if !ok {
		ln.Close()
		return nil, fmt.Errorf("prefork: worker listener %s is a %T", l.Addr, ln)
	}
	return rl, nil
}

// packetOf rebuilds a datagram socket the parent handed over.
func packetOf(fd int, l wire.Listener) (*net.UDPConn, error) {
	f := os.NewFile(uintptr(fd), "forkline-packet")
	defer f.Close()
	pc, err := net.FilePacketConn(f)
	if err != nil {
		return nil, fmt.Errorf("prefork: worker socket %s: %w", l.Addr, err)
	}
	uc, ok := pc.(*net.UDPConn)
	if !ok {
		pc.Close()
		return nil, fmt.Errorf("prefork: worker socket %s is a %T, not UDP", l.Addr, pc)
	}
	return uc, nil
}

// answerBeats echoes the parent's heartbeat pings on the socket fd until it
// closes. It runs no user code, so nothing a user callback does can hold
// up the answer.
func answerBeats(fd int) (stop func()) {
	f := os.NewFile(uintptr(fd), "forkline-heartbeat")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return func() {}
	}
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		var p [8]byte
		for {
			n, err := c.Read(p[:])
			if err != nil {
				return
			}
			if n == 8 && binary.LittleEndian.Uint64(p[:]) > 0 {
				c.Write(p[:])
			}
		}
	}()
	return func() {
		c.Close()
		<-exited
	}
}

// acceptQueued accepts one queued connection without waiting, or returns
// net.ErrClosed when the queue is empty.
func acceptQueued(l rawListener) (net.Conn, error) {
	rc, err := l.SyscallConn()
	if err != nil {
		return nil, err
	}
	nfd := -1
	var aerr error
	err = rc.Control(func(fd uintptr) {
		syscall.ForkLock.RLock() // no fork between accept and close-on-exec
		nfd, _, aerr = unix.Accept(int(fd))
		if aerr == nil {
			unix.CloseOnExec(nfd)
		}
		syscall.ForkLock.RUnlock()
	})
	if err != nil || aerr != nil {
		return nil, net.ErrClosed // EAGAIN: the queue is empty
	}
	f := os.NewFile(uintptr(nfd), "forkline-drained-conn")
	c, err := net.FileConn(f)
	f.Close()
	return c, err
}

// takeQueue accepts every connection queued on l and stops l listening,
// in one go: shutdown(SHUT_RD) takes a listener out of its reuseport group
// at once, where close(2) waits until no goroutine is blocked on the
// descriptor (the server's Accept, which must first be scheduled: one P),
// and the kernel would queue new connections on it meanwhile.
func takeQueue(l rawListener) []net.Conn {
	rc, err := l.SyscallConn()
	if err != nil {
		return nil
	}
	var fds []int
	rc.Control(func(fd uintptr) {
		syscall.ForkLock.RLock() // no fork between accept and close-on-exec
		for {
			nfd, _, err := unix.Accept(int(fd))
			if err != nil {
				break // EAGAIN: the queue is empty
			}
			unix.CloseOnExec(nfd)
			fds = append(fds, nfd)
		}
		unix.Shutdown(int(fd), unix.SHUT_RD)
		syscall.ForkLock.RUnlock()
	})
	var conns []net.Conn
	for _, fd := range fds {
		f := os.NewFile(uintptr(fd), "forkline-drained-conn")
		if c, err := net.FileConn(f); err == nil {
			conns = append(conns, c)
		}
		f.Close()
	}
	return conns
}

// ensureListening makes l's socket listen again if it stopped.
func ensureListening(l rawListener) error {
	rc, err := l.SyscallConn()
	if err != nil {
		return err
	}
	var lerr error
	rc.Control(func(fd uintptr) {
		if v, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err == nil && v == 0 {
			lerr = os.NewSyscallError("listen", unix.Listen(int(fd), backlog()))
		}
	})
	return lerr
}

// backlog is the backlog Go's own listeners use.
func backlog() int {
	b, err := os.ReadFile("/proc/sys/net/core/somaxconn")
	if n, _ := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && n > 0 {
		return min(n, 1<<16-1)
	}
	return unix.SOMAXCONN
}

func parentPID() int { return unix.Getppid() }
