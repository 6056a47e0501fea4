package harness

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
)

// FreePort returns a port of 127.0.0.1 below the ephemeral range (so that
// no client connection takes it meanwhile) that no socket uses.
func FreePort() (int, error) {
	hi := min(32000, ephemeralLow())
	if hi <= 20000+100 {
		hi = 30000
	}
	for range 200 {
		p := 20000 + rand.IntN(hi-20000)
		if portInUse(p) {
			continue
		}
		ln, err := net.Listen("tcp4", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			continue
		}
		ln.Close()
		return p, nil
	}
	return 0, errors.New("no free port found in 200 tries")
}

func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 32768
	}
	n, err := strconv.Atoi(f[0])
	if err != nil {
		return 32768
	}
	return n
}

// portInUse says whether any TCP socket (listening, connected, in
// TIME_WAIT) has port p at either end, from /proc/net/tcp and tcp6.
func portInUse(p int) bool {
	hex := fmt.Sprintf(":%04X", p)
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for line := range bytes.Lines(b) {
			fields := strings.Fields(string(line))
			if len(fields) > 2 && (strings.HasSuffix(fields[1], hex) || strings.HasSuffix(fields[2], hex)) {
				return true
			}
		}
	}
	return false
}
