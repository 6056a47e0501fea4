package prefork_test

// Workers that run as another user (Config.User, Config.Group): real
// clusters whose parent is root and whose workers are nobody, the parent
// on a port below 1024; and the parents that must be refused before they
// bind anything. The helper runs from a copy of this test binary in a
// directory of mode 0755: go test's own build directory is 0700, and a
// worker that is nobody could not execute it.

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/forkline/forkline/prefork"
)

func init() {
	registerHelper("user", userMain)
}

// whoami is what a worker of the "user" helper says of itself.
type whoami struct {
	PID, PPID  int
	Uid, Gid   string // the lines of /proc/self/status, fields joined by spaces
	Groups     string
	CapEff     string
	KillParent string // the error of kill(getppid(), 0), "" if it succeeded
}

// userMain is a cluster whose workers run as -user and -group, with JSON
// logs on stderr and its parent's observations on the pipe. Its workers
// answer GET /whoami with a whoami.
func userMain(args []string) int {
	obs := openObserver()
	var cfg prefork.Config
	fs := flag.NewFlagSet("user", flag.ContinueOnError)
	fs.StringVar(&cfg.Addr, "addr", "127.0.0.1:0", "")
	fs.IntVar(&cfg.Workers, "workers", 2, "")
	fs.StringVar(&cfg.User, "user", "", "")
	fs.StringVar(&cfg.Group, "group", "", "")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg.Logger = slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg.OnEvent = obs.event
	mux := http.NewServeMux()
	mux.HandleFunc("/whoami", func(w http.ResponseWriter, r *http.Request) {
		st, err := procStatus("self")
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		ppid := os.Getppid()
		json.NewEncoder(w).Encode(whoami{PID: os.Getpid(), PPID: ppid,
			Uid: st["Uid"], Gid: st["Gid"], Groups: st["Groups"], CapEff: st["CapEff"],
			KillParent: errText(syscall.Kill(ppid, 0))})
	})
	err := prefork.New(cfg).Run(mux)
	obs.write(observation{Kind: kindRun, Err: errText(err)})
	if err != nil {
		fmt.Fprintln(os.Stderr, "user:", err)
		return 1
	}
	return 0
}

// procStatus reads /proc/<pid>/status, each value's fields joined by one
// space ("Uid" is "65534 65534 65534 65534"; "Groups" is "" for none).
func procStatus(pid string) (map[string]string, error) {
	data, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		return nil, err
	}
	st := map[string]string{}
	for line := range strings.Lines(string(data)) {
		if k, v, ok := strings.Cut(line, ":"); ok {
			st[k] = strings.Join(strings.Fields(v), " ")
		}
	}
	return st, nil
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the parent starts its workers as another user")
	}
}

// sharedExecutable copies this test binary into a fresh directory of mode
// 0755, where any user may execute it (0700 with open false: only its
// owner), and removes it when the test ends.
func sharedExecutable(t *testing.T, open bool) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "forkline-user-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	mode := os.FileMode(0o700)
	if open {
		mode = 0o755
	}
	if err := os.Chmod(dir, mode); err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(dir, "prefork.test")
	src, err := os.Open(self)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	// No fork while the file is open for writing: a child of another
	// test would hold the descriptor until its exec, and executing the
	// file meanwhile fails with ETXTBSY (golang/go#22315).
	syscall.ForkLock.RLock()
	defer syscall.ForkLock.RUnlock()
	dst, err := os.OpenFile(exe, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	return exe
}

// lowPorts are the privileged ports handed out to this run's tests.
var (
	lowPortsMu sync.Mutex
	lowPorts   = map[int]bool{}
)

// lowAddr returns 127.0.0.1:P for a port P below 1024 that nothing
// listens on now and no other test of this run was given.
func lowAddr(t *testing.T) string {
	t.Helper()
	lowPortsMu.Lock()
	defer lowPortsMu.Unlock()
	for port := 81; port < 1024; port++ {
		if lowPorts[port] {
			continue
		}
		addr := "127.0.0.1:" + strconv.Itoa(port)
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		ln.Close()
		lowPorts[port] = true
		return addr
	}
	t.Skip("no free port below 1024 on 127.0.0.1")
	return ""
}

// setpriv returns a wrap that runs the helper's parent with the given
// setpriv(1) options, or skips the test without setpriv.
func setpriv(t *testing.T, opts ...string) []string {
	t.Helper()
	path, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skip("no setpriv(1) to start the parent as another user")
	}
	return append([]string{path}, opts...)
}

func lookupNobody(t *testing.T) *user.User {
	t.Helper()
	u, err := user.Lookup("nobody")
	if err != nil {
		t.Skip("no user nobody:", err)
	}
	return u
}

// The parent, root, binds a port below 1024 and serves it through workers
// that are the user and group asked for, with no supplementary groups and
// no capabilities, and that cannot signal it.
func TestUserWorkers(t *testing.T) {
	needRoot(t)
	nobody := lookupNobody(t)
	for _, tc := range []struct {
		name, user, group string
		uid, gid          string
	}{
		{"NameAndPrimaryGroup", "nobody", "", nobody.Uid, nobody.Gid},
		{"NumericIDs", nobody.Uid, "4242", nobody.Uid, "4242"}, // a gid without a group entry
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			addr := lowAddr(t)
			// A parent with a supplementary group, when setpriv can give
			// it one, for the workers not to have.
			var wrap []string
			if path, err := exec.LookPath("setpriv"); err == nil {
				wrap = []string{path, "--groups=4244"}
			}
			c := startHelper(t, helperSpec{helper: "user", exe: sharedExecutable(t, true), wrap: wrap},
				"-addr", addr, "-workers", "2", "-user", tc.user, "-group", tc.group)
			got, pids := c.ready()
			if got != addr {
				t.Fatalf("cluster ready on %s, want %s", got, addr)
			}
			ids := func(id string) string { return strings.Repeat(id+" ", 3) + id } // real, effective, saved, fs
			if st, err := procStatus(strconv.Itoa(c.pid)); err != nil || st["Uid"] != ids("0") || wrap != nil && st["Groups"] != "4244" {
				t.Errorf("the parent's Uid is %q, Groups %q (%v), want root's, 4244: it keeps its privileges", st["Uid"], st["Groups"], err)
			}
			if len(pids) != 2 {
				t.Fatalf("%d workers listening at ready, want 2: %v", len(pids), pids)
			}
			// What the kernel says of each worker.
			for id, pid := range pids {
				st, err := procStatus(strconv.Itoa(pid))
				if err != nil {
					t.Fatalf("worker %d: %v", id, err)
				}
				if st["Uid"] != ids(tc.uid) || st["Gid"] != ids(tc.gid) || st["Groups"] != "" || st["CapEff"] != "0000000000000000" || st["CapPrm"] != "0000000000000000" {
					t.Errorf("worker %d (pid %d): Uid %q Gid %q Groups %q CapEff %q CapPrm %q; want uid %s, gid %s, no groups, no capabilities",
						id, pid, st["Uid"], st["Gid"], st["Groups"], st["CapEff"], st["CapPrm"], tc.uid, tc.gid)
				}
			}
			// What each worker says, answering on the privileged port.
			seen := map[int]whoami{}
			for i := 0; i < 200 && len(seen) < 2; i++ {
				body, err := fetch(addr, "/whoami", requestTimeout)
				if err != nil {
					t.Fatalf("GET /whoami: %v", err)
				}
				var w whoami
				if err := json.Unmarshal([]byte(body), &w); err != nil {
					t.Fatalf("GET /whoami: %v: %q", err, body)
				}
				seen[w.PID] = w
			}
			if len(seen) < 2 {
				t.Fatalf("200 connections reached %d worker(s), want 2", len(seen))
			}
			for _, w := range seen {
				if w.Uid != ids(tc.uid) || w.Gid != ids(tc.gid) || w.Groups != "" {
					t.Errorf("worker pid %d says Uid %q Gid %q Groups %q", w.PID, w.Uid, w.Gid, w.Groups)
				}
				if w.PPID != c.pid || w.KillParent != syscall.EPERM.Error() {
					t.Errorf("worker pid %d: kill(%d, 0) = %q, want the parent %d and %q", w.PID, w.PPID, w.KillParent, c.pid, syscall.EPERM.Error())
				}
			}
			c.stopAndCheck()
			c.waitGone(10 * time.Second)
		})
	}
}

// A parent that is not root, without CAP_SETUID and CAP_SETGID, asked for
// another user's workers, is refused before it binds anything; one asked
// for its own ids starts them, as they are.
func TestUserNotRootParent(t *testing.T) {
	needRoot(t) // to start the parent as nobody
	nobody := lookupNobody(t)
	asNobody := setpriv(t, "--reuid="+nobody.Uid, "--regid="+nobody.Gid, "--clear-groups")
	t.Run("Refused", func(t *testing.T) {
		t.Parallel()
		c := startHelper(t, helperSpec{helper: "user", exe: sharedExecutable(t, true), wrap: asNobody}, "-user", "root")
		run := c.awaitKind(20*time.Second, kindRun)
		want := fmt.Sprintf(`prefork: Config.User "root": this process (uid %s, gid %s) cannot start workers as uid 0, gid 0: that takes root, or CAP_SETUID and CAP_SETGID`, nobody.Uid, nobody.Gid)
		if run.Err != want {
			t.Errorf("Run returned %q\nwant %q", run.Err, want)
		}
		if code := c.wait(10 * time.Second); code != 1 {
			t.Errorf("exit code %d, want 1", code)
		}
		checkNothingStarted(t, c)
	})
	t.Run("OwnIDs", func(t *testing.T) {
		t.Parallel()
		c := startHelper(t, helperSpec{helper: "user", exe: sharedExecutable(t, true), wrap: asNobody}, "-workers", "1", "-user", "nobody")
		_, pids := c.ready()
		for _, pid := range pids {
			if st, err := procStatus(strconv.Itoa(pid)); err != nil || !strings.HasPrefix(st["Uid"], nobody.Uid+" ") {
				t.Errorf("worker pid %d: Uid %q (%v), want %s", pid, st["Uid"], err, nobody.Uid)
			}
		}
		c.stopAndCheck()
	})
}

// A parent that is not root but was given CAP_SETUID and CAP_SETGID as
// ambient capabilities would pass them on to its workers: refused.
func TestUserAmbientCapabilities(t *testing.T) {
	needRoot(t)
	nobody := lookupNobody(t)
	wrap := setpriv(t, "--reuid=4243", "--regid=4243", "--clear-groups", "--inh-caps=+setuid,+setgid", "--ambient-caps=+setuid,+setgid")
	t.Parallel()
	c := startHelper(t, helperSpec{helper: "user", exe: sharedExecutable(t, true), wrap: wrap}, "-user", "nobody")
	run := c.awaitKind(20*time.Second, kindRun)
	want := fmt.Sprintf(`prefork: Config.User "nobody": workers of uid %s would keep capabilities across their exec (with CAP_SETUID they could make themselves root again): this process's ambient capabilities (0xc0)`, nobody.Uid)
	if !strings.HasPrefix(run.Err, want) {
		t.Errorf("Run returned %q\nwant it to start %q", run.Err, want)
	}
	if code := c.wait(10 * time.Second); code != 1 {
		t.Errorf("exit code %d, want 1", code)
	}
	checkNothingStarted(t, c)
}

// A worker that may not execute the program fails the start with an error
// that says why.
func TestUserExecutableNotAccessible(t *testing.T) {
	needRoot(t)
	lookupNobody(t)
	t.Parallel()
	exe := sharedExecutable(t, false) // 0700, root's
	c := startHelper(t, helperSpec{helper: "user", exe: exe}, "-workers", "1", "-user", "nobody")
	run := c.awaitKind(20*time.Second, kindRun)
	want := "fork/exec " + exe + ": permission denied: workers run as uid "
	if !strings.Contains(run.Err, want) || !strings.Contains(run.Err, "must be able to read and execute it") {
		t.Errorf("Run returned %q\nwant it to say %q and why", run.Err, want)
	}
	if code := c.wait(10 * time.Second); code != 1 {
		t.Errorf("exit code %d, want 1", code)
	}
}

// checkNothingStarted checks that a refused parent bound no socket and
// started no worker.
func checkNothingStarted(t *testing.T, c *testCluster) {
	t.Helper()
	c.waitGone(10 * time.Second)
	for _, o := range c.obs.all() {
		if o.is(prefork.EventFork) {
			t.Errorf("a worker was started: %v", o)
		}
	}
	if recs := c.logged(func(r logRecord) bool { return r.str("msg") == "listening" }); len(recs) > 0 {
		t.Errorf("the parent bound a socket: %v", recs)
	}
}

// Run refuses names it cannot resolve, in any process, before it binds
// anything, with an error naming the field and the value.
func TestUserUnknown(t *testing.T) {
	lookupNobody(t)
	for _, tc := range []struct {
		name string
		cfg  prefork.Config
		want string
	}{
		{"User", prefork.Config{User: "forkline-nosuchuser"},
			`prefork: Config.User "forkline-nosuchuser": user: unknown user forkline-nosuchuser`},
		{"Group", prefork.Config{User: "nobody", Group: "forkline-nosuchgroup"},
			`prefork: Config.Group "forkline-nosuchgroup": group: unknown group forkline-nosuchgroup`},
		{"GroupWithoutUser", prefork.Config{Group: "nogroup"},
			`prefork: Config.Group "nogroup" is set but User is not: name the workers' user too`},
		{"NotAnID", prefork.Config{User: "4294967295", Group: "0"},
			`prefork: Config.User "4294967295": not an id (0 to 4294967294)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Addr = "127.0.0.1:0"
			tc.cfg.OnEvent = func(ev prefork.Event) { t.Errorf("event %v", ev.Type) }
			err := prefork.New(tc.cfg).Serve(func(context.Context, net.Listener) error {
				return errors.New("served")
			})
			if err == nil || err.Error() != tc.want {
				t.Errorf("Serve returned %v\nwant %s", err, tc.want)
			}
		})
	}
}
