package supervisor

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// holder names a process that listens on (or, udp, is bound to) port,
// for the error of a bind that found the address in use: "pid 1234,
// hello", or "" when none can be found (another user's process, another
// network namespace).
func holder(network string, port int) string {
	inodes := listeningInodes(network, port)
	if len(inodes) == 0 {
		return ""
	}
	fds, _ := filepath.Glob("/proc/[0-9]*/fd/*")
	best := 0
	for _, fd := range fds {
		link, err := os.Readlink(fd)
		if err != nil || !strings.HasPrefix(link, "socket:[") {
			continue
		}
		if !inodes[strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]")] {
			continue
		}
		pid, _ := strconv.Atoi(strings.Split(fd, "/")[2])
		if best == 0 || pid < best { // the oldest holder: a cluster's parent
			best = pid
		}
	}
	if best == 0 {
		return ""
	}
	comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", best))
	return fmt.Sprintf("pid %d, %s", best, strings.TrimSpace(string(comm)))
}

// listeningInodes returns the inodes of the sockets listening (tcp) or
// bound (udp: state 07) on port.
func listeningInodes(network string, port int) map[string]bool {
	inodes := make(map[string]bool)
	files, state := []string{"/proc/net/tcp", "/proc/net/tcp6"}, "0A"
	if strings.HasPrefix(network, "udp") {
		files, state = []string{"/proc/net/udp", "/proc/net/udp6"}, "07"
	}
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) < 10 || f[3] != state {
				continue
			}
			local := f[1]
			p, _ := strconv.ParseInt(local[strings.LastIndex(local, ":")+1:], 16, 32)
			if int(p) == port {
				inodes[f[9]] = true
			}
		}
	}
	return inodes
}
