//go:build linux || darwin || freebsd

package control

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

const nobody = 65534

// The child, run as another user: it connects and prints the line the
// server sends, or why it could not connect.
func init() {
	helpers["connect"] = func() {
		c, err := net.Dial("unix", os.Getenv("CONTROL_TEST_SOCKET"))
		if err != nil {
			fmt.Println("dial:", err)
			return
		}
		defer c.Close()
		line, err := bufio.NewReader(c).ReadString('\n')
		fmt.Printf("line: %s err: %v\n", strings.TrimSpace(line), err)
	}
}

// Another user is stopped by the socket's mode at connect, and, where the
// mode would let it through (0666, for the test), by its credentials.
func TestRefusesOtherUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root, to run a client as uid 65534")
	}
	// A directory, and a copy of the test binary, that the other user
	// can reach (t.TempDir and go test's build directory are 0700).
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	exe := filepath.Join(dir, "helper")
	copyFile(t, exe)

	for _, tt := range []struct {
		name string
		perm os.FileMode
	}{{"mode", 0o600}, {"credentials", 0o666}} {
		t.Run(tt.name, func(t *testing.T) {
			h := &fakeHandler{status: testStatus}
			s := serveAt(t, filepath.Join(dir, tt.name+".sock"), h, tt.perm)
			cmd := exec.Command(exe, "-test.run=^$")
			// GORACE: a -race binary otherwise sleeps 1 s at exit.
			cmd.Env = append(os.Environ(), helperEnv+"=connect", "CONTROL_TEST_SOCKET="+s.path, "GORACE=atexit_sleep_ms=0")
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
			cmd.Stderr = os.Stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("helper: %v (%s)", err, out)
			}
			got := string(out)
			if tt.perm == 0o600 {
				if !strings.Contains(got, "dial:") || !strings.Contains(got, "permission denied") {
					t.Errorf("the other user's connect: %q, want permission denied", got)
				}
				if strings.Contains(s.log.String(), "refused") {
					t.Errorf("a connection was accepted: %s", s.log)
				}
			} else {
				want := fmt.Sprintf(`line: {"ok":false,"error":"permission denied: uid %d is neither the cluster's (uid 0) nor root"} err: <nil>`, nobody)
				if strings.TrimSpace(got) != want {
					t.Errorf("the other user got %q, want %q", got, want)
				}
				// Logged before the line was written.
				log := s.log.String()
				pid := strconv.Itoa(cmd.Process.Pid)
				if !strings.Contains(log, "refused a connection from another user") || !strings.Contains(log, "uid=65534") ||
					(peerPIDKnown && !strings.Contains(log, "pid="+pid)) {
					t.Errorf("log %q, want a warning with uid=65534 pid=%s", log, pid)
				}
			}
			if calls := h.Calls(); len(calls) > 0 {
				t.Errorf("the handler was called: %q", calls)
			}
		})
	}
}

// peerPIDKnown: FreeBSD's peer credentials here have no pid.
const peerPIDKnown = runtime.GOOS != "freebsd"

func copyFile(t *testing.T, to string) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.Open(self)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}
