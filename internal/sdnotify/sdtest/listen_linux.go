package sdtest

import (
	"fmt"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// listen binds addr ("@name" is abstract) with SO_PASSCRED, so that each
// datagram carries its sender's credentials.
func listen(addr string) (*net.UnixConn, error) {
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return nil, err
	}
	rc, err := conn.SyscallConn()
	if err == nil {
		cerr := rc.Control(func(fd uintptr) {
			err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSCRED, 1)
		})
		err = os.NewSyscallError("setsockopt", err)
		if cerr != nil {
			err = cerr
		}
	}
	if err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

// oobSize fits credentials and SCM_MAX_FD (253) descriptors.
var oobSize = unix.CmsgSpace(unix.SizeofUcred) + unix.CmsgSpace(253*4)

func receive(conn *net.UnixConn, buf []byte) (Message, error) {
	oob := make([]byte, oobSize)
	n, oobn, flags, _, err := conn.ReadMsgUnix(buf, oob)
	if err != nil {
		return Message{}, err
	}
	cmsgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil {
		return Message{}, os.NewSyscallError("recvmsg", err)
	}
	msg := Message{Lines: lines(string(buf[:n]))}
	for _, c := range cmsgs {
		if c.Header.Level != unix.SOL_SOCKET {
			continue
		}
		switch c.Header.Type {
		case unix.SCM_CREDENTIALS:
			if cred, err := unix.ParseUnixCredentials(&c); err == nil {
				msg.PID = int(cred.Pid)
			}
		case unix.SCM_RIGHTS:
			fds, err := unix.ParseUnixRights(&c)
			if err != nil {
				return Message{}, os.NewSyscallError("recvmsg", err)
			}
			msg.FDs = append(msg.FDs, fds...)
		}
	}
	if flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0 {
		closeAll(msg.FDs)
		return Message{}, fmt.Errorf("a truncated datagram (flags %#x) from pid %d", flags, msg.PID)
	}
	return msg, nil
}

func dup(fd int) (int, error) {
	c, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 3)
	return c, os.NewSyscallError("fcntl", err)
}

func closeFD(fd int) { unix.Close(fd) }

// sameFile reports whether descriptors a and b are the same open file, as
// systemd's same_fd decides: kcmp(2), which tells apart the files of one
// anonymous inode (eBPF maps and programs all share one), and the inode
// where kcmp is not allowed.
func sameFile(a, b int) bool {
	const kcmpFile = 0
	pid := uintptr(unix.Getpid())
	r, _, errno := unix.Syscall6(unix.SYS_KCMP, pid, pid, kcmpFile, uintptr(a), uintptr(b), 0)
	if errno == 0 {
		return r == 0
	}
	var sa, sb unix.Stat_t
	return unix.Fstat(a, &sa) == nil && unix.Fstat(b, &sb) == nil && sa.Dev == sb.Dev && sa.Ino == sb.Ino
}
