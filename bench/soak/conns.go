package main

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// heldConns returns the client ports of the TCP connections on the server
// port that pid holds open: its socket inodes (/proc/<pid>/fd) matched
// against the kernel's TCP table in any state but LISTEN. The table is
// read with sock_diag, which leaves out TIME_WAIT (tens of thousands of
// entries under this load, which make /proc/net/tcp take 100–300 ms to
// read while the victim waits stopped); /proc/net/tcp is the fallback.
func heldConns(pid, port int) (held map[int]bool, how string, err error) {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, "", err
	}
	inodes := map[uint64]bool{}
	for _, e := range ents {
		link, err := os.Readlink(filepath.Join(dir, e.Name()))
		if ino, ok := strings.CutPrefix(link, "socket:["); err == nil && ok {
			if n, err := strconv.ParseUint(strings.TrimSuffix(ino, "]"), 10, 64); err == nil {
				inodes[n] = true
			}
		}
	}
	conns, how, err := diagConns(port)
	if err != nil {
		conns, how, err = procConns(port)
	}
	if err != nil {
		return nil, how, err
	}
	held = map[int]bool{}
	for ino, client := range conns {
		if inodes[ino] {
			held[client] = true
		}
	}
	return held, how, nil
}

// TCP states (include/net/tcp_states.h).
const (
	tcpTimeWait   = 6
	tcpListen     = 10
	tcpNewSynRecv = 12
)

// diagConns dumps the IPv4 TCP sockets whose local port is port, in any
// state but LISTEN and TIME_WAIT, by inode: their peer's port.
func diagConns(port int) (map[uint64]int, string, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, "sock_diag", err
	}
	defer unix.Close(fd)
	tv := unix.NsecToTimeval(int64(2 * time.Second))
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	// nlmsghdr (16 bytes), then inet_diag_req_v2 (56 bytes).
	req := make([]byte, 16+56)
	binary.NativeEndian.PutUint32(req[0:], uint32(len(req)))
	binary.NativeEndian.PutUint16(req[4:], unix.SOCK_DIAG_BY_FAMILY)
	binary.NativeEndian.PutUint16(req[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	req[16], req[17] = unix.AF_INET, unix.IPPROTO_TCP
	states := uint32(1<<tcpNewSynRecv-1) &^ (1 | 1<<tcpTimeWait | 1<<tcpListen)
	binary.NativeEndian.PutUint32(req[20:], states)
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, "sock_diag", err
	}
	out := map[uint64]int{}
	buf := make([]byte, 1<<16)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return nil, "sock_diag", err
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return nil, "sock_diag", err
		}
		for _, m := range msgs {
			switch m.Header.Type {
			case unix.NLMSG_DONE:
				return out, "sock_diag", nil
			case unix.NLMSG_ERROR:
				return nil, "sock_diag", fmt.Errorf("sock_diag: error %d", int32(binary.NativeEndian.Uint32(m.Data)))
			}
			// inet_diag_msg: family, state, timer, retrans, then the
			// socket id (sport and dport big endian at 4 and 6), and the
			// inode at 68.
			if d := m.Data; len(d) >= 72 && int(binary.BigEndian.Uint16(d[4:])) == port {
				out[uint64(binary.NativeEndian.Uint32(d[68:]))] = int(binary.BigEndian.Uint16(d[6:]))
			}
		}
	}
}

// procConns is diagConns read from /proc/net/tcp.
func procConns(port int) (map[uint64]int, string, error) {
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		return nil, "/proc/net/tcp", err
	}
	defer f.Close()
	out := map[uint64]int{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// sl local rem st tx:rx tr:when retrnsmt uid timeout inode
		fl := strings.Fields(sc.Text())
		if len(fl) < 10 || fl[3] == "0A" || fl[3] == "06" || hexPort(fl[1]) != port {
			continue
		}
		if ino, err := strconv.ParseUint(fl[9], 10, 64); err == nil && ino != 0 {
			out[ino] = hexPort(fl[2])
		}
	}
	return out, "/proc/net/tcp", sc.Err()
}

// hexPort reads the port of "0100007F:1F90".
func hexPort(addr string) int {
	_, p, ok := strings.Cut(addr, ":")
	if !ok {
		return -1
	}
	n, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		return -1
	}
	return int(n)
}
