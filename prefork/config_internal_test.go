package prefork

import (
	"net/http"
	"os"
	"os/user"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestModeText(t *testing.T) {
	for _, m := range []Mode{ModeAuto, ModeReusePort, ModeInherit} {
		b, _ := m.MarshalText()
		var got Mode
		if err := got.UnmarshalText(b); err != nil || got != m {
			t.Errorf("round trip of %v: %v, %v", m, got, err)
		}
	}
	var m Mode
	if err := m.UnmarshalText([]byte("fast")); err == nil {
		t.Error("unknown mode accepted")
	}
}

func TestConfigDefaults(t *testing.T) {
	t.Setenv("PORT", "9999")
	c := Config{}.normalized()
	if c.Addr != ":9999" || c.Network != "tcp" || c.Workers < 1 || c.StopTimeout != DefaultStopTimeout ||
		c.ReadyTimeout != DefaultReadyTimeout || c.MaxMessageSize != DefaultMaxMessageSize || c.Logger == nil {
		t.Errorf("defaults: %+v", c)
	}
	if err := (Config{Network: "sctp"}).normalized().check(); err == nil {
		t.Error("sctp accepted")
	}
	c = Config{HeartbeatTimeout: 500 * time.Millisecond}.normalized()
	if c.HeartbeatInterval != 250*time.Millisecond {
		t.Errorf("heartbeat interval %v, want half the timeout", c.HeartbeatInterval)
	}
}

// The default worker count is the runtime's default GOMAXPROCS (affinity and
// cgroup CPU limit), whether or not GOMAXPROCS was set, and finding it
// leaves the setting as it was.
func TestDefaultGOMAXPROCS(t *testing.T) {
	prev := runtime.GOMAXPROCS(0)
	defer runtime.GOMAXPROCS(prev)
	runtime.SetDefaultGOMAXPROCS()
	want := runtime.GOMAXPROCS(0)
	if got := defaultGOMAXPROCS(); got != want || runtime.GOMAXPROCS(0) != want {
		t.Errorf("unset: got %d, want %d; GOMAXPROCS now %d", got, want, runtime.GOMAXPROCS(0))
	}
	set := want + 3 // as GOMAXPROCS=<want+3> in the environment would
	runtime.GOMAXPROCS(set)
	if got := defaultGOMAXPROCS(); got != want {
		t.Errorf("with GOMAXPROCS=%d: got %d, want the default %d", set, got, want)
	}
	if now := runtime.GOMAXPROCS(0); now != set {
		t.Errorf("GOMAXPROCS is %d after, want %d as it was", now, set)
	}
	if c := (Config{}).normalized(); c.Workers != availableCPUs() || c.Workers < 1 {
		t.Errorf("default Workers %d, want %d", c.Workers, availableCPUs())
	}
}

// check refuses a value the cluster cannot run with, and names the field;
// a value is never silently replaced by a default.
//
// 8b2b930 checked only Network, Mode, and (in one message) MaxRequests,
// MaxRequestsJitter and MaxMemory: Workers -3 meant one worker per CPU, a
// negative timeout the default.
func TestConfigCheck(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		cfg  Config
		want string // "" for a valid config
	}{
		{Config{}, ""},
		{Config{HeartbeatTimeout: 2 * time.Second}, ""},
		{Config{HeartbeatTimeout: 2 * time.Second, HeartbeatInterval: 500 * time.Millisecond}, ""},
		{Config{Workers: -3}, "prefork: Config.Workers is -3: it must not be negative"},
		{Config{StopTimeout: -time.Second}, "prefork: Config.StopTimeout is -1s: it must not be negative"},
		{Config{ReadyTimeout: -time.Millisecond}, "prefork: Config.ReadyTimeout is -1ms"},
		{Config{HeartbeatTimeout: -time.Second}, "prefork: Config.HeartbeatTimeout is -1s"},
		{Config{HeartbeatTimeout: time.Second, HeartbeatInterval: -time.Second}, "prefork: Config.HeartbeatInterval is -1s"},
		{Config{MaxRequests: -1}, "prefork: Config.MaxRequests is -1"},
		{Config{MaxRequestsJitter: -5}, "prefork: Config.MaxRequestsJitter is -5"},
		{Config{MaxMemory: -1}, "prefork: Config.MaxMemory is -1"},
		{Config{MaxMessageSize: -1}, "prefork: Config.MaxMessageSize is -1"},
		{Config{HeartbeatTimeout: time.Second, HeartbeatInterval: time.Second}, "prefork: Config.HeartbeatInterval 1s is not shorter than HeartbeatTimeout 1s"},
		{Config{HeartbeatTimeout: time.Second, HeartbeatInterval: 3 * time.Second}, "prefork: Config.HeartbeatInterval 3s is not shorter than HeartbeatTimeout 1s"},
		{Config{HeartbeatInterval: time.Second}, "prefork: Config.HeartbeatInterval 1s is set but HeartbeatTimeout is not"},
		{Config{Network: "sctp"}, `prefork: Config.Network "sctp"`},
		{Config{Mode: Mode(7)}, "prefork: Config.Mode Mode(7)"},
	} {
		err := tc.cfg.check()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%+v refused: %v", tc.cfg, err)
		case tc.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.want)):
			t.Errorf("%+v: %v, want %q", tc.cfg, err, tc.want)
		}
	}
}

// Run refuses a bad Config at once, before it binds or starts anything.
func TestRunRefusesBadConfig(t *testing.T) {
	t.Parallel()
	c := New(Config{Addr: "127.0.0.1:0", Workers: -3})
	errc := make(chan error, 1)
	go func() { errc <- c.Run(http.NotFoundHandler()) }()
	watchdog := time.NewTimer(10 * time.Second)
	defer watchdog.Stop()
	select {
	case err := <-errc:
		if err == nil || !strings.Contains(err.Error(), "Config.Workers is -3") {
			t.Errorf("Run with Workers -3: %v, want an error naming Config.Workers", err)
		}
	case <-watchdog.C:
		c.Close()
		t.Fatal("Run with Workers -3 started a cluster")
	}
}

// User and Group resolve once, in normalized, to the ids the workers run
// as: names through the user database, numbers as they are, and an empty
// Group to the user's primary group. It holds with and without cgo
// (os/user reads /etc/passwd and /etc/group itself without it).
func TestUserResolution(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no uids here: Config.User is unsupported")
	}
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Skip("no user nobody:", err)
	}
	root, err := user.LookupGroupId("0")
	if err != nil {
		t.Skip("no group 0:", err)
	}
	for _, tc := range []struct {
		name, user, group string
		uid, gid          string
	}{
		{"NameWithPrimaryGroup", "nobody", "", nobody.Uid, nobody.Gid},
		{"NameWithGroupName", "nobody", root.Name, nobody.Uid, "0"},
		{"UIDWithPrimaryGroup", nobody.Uid, "", nobody.Uid, nobody.Gid},
		{"IDsUnknownToTheDatabase", "4242", "4243", "4242", "4243"},
		{"LeadingZeros", "0042", "007", "42", "7"},
		{"UIDWithLeadingZeroAndPrimaryGroup", "0" + nobody.Uid, "", nobody.Uid, nobody.Gid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Config{User: tc.user, Group: tc.group}.normalized()
			if c.User != tc.uid || c.Group != tc.gid {
				t.Errorf("User %q, Group %q normalized to %q, %q; want %q, %q", tc.user, tc.group, c.User, c.Group, tc.uid, tc.gid)
			}
			if sc := c.supervisorConfig(false); sc.User != tc.uid || sc.Group != tc.gid {
				t.Errorf("the supervisor gets %q, %q", sc.User, sc.Group)
			}
		})
	}
	if c := (Config{}).normalized(); c.User != "" || c.Group != "" {
		t.Errorf("no User normalized to %q, %q", c.User, c.Group)
	}
}

func TestUserCheck(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no uids here: Config.User is unsupported")
	}
	if _, err := user.Lookup("nobody"); err != nil {
		t.Skip("no user nobody:", err)
	}
	self, err := user.Current()
	if err != nil {
		t.Skip(err)
	}
	for _, tc := range []struct {
		name string
		cfg  Config
		want string // a prefix of the error; "" for none
	}{
		{"OwnIDs", Config{User: self.Uid, Group: self.Gid}, ""},
		{"UnknownUser", Config{User: "forkline-nosuchuser"}, `prefork: Config.User "forkline-nosuchuser": user: unknown user forkline-nosuchuser`},
		{"UnknownUID", Config{User: "4242"}, `prefork: Config.User "4242": user: unknown userid 4242 (set Config.Group`},
		{"UnknownGroup", Config{User: "nobody", Group: "forkline-nosuchgroup"}, `prefork: Config.Group "forkline-nosuchgroup": group: unknown group forkline-nosuchgroup`},
		{"GroupWithoutUser", Config{Group: "0"}, `prefork: Config.Group "0" is set but User is not`},
		{"NoChangeID", Config{User: "4294967295", Group: "0"}, `prefork: Config.User "4294967295": not an id`},
		{"TooLarge", Config{User: "0", Group: "4294967296"}, `prefork: Config.Group "4294967296": not an id`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.check()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.want)):
				t.Errorf("check: %v\nwant %s", err, tc.want)
			}
		})
	}
	if os.Geteuid() == 0 {
		if err := (Config{User: "nobody"}).check(); err != nil {
			t.Errorf("root refused nobody: %v", err)
		}
	} else if err := (Config{User: "0"}).check(); err == nil || !strings.Contains(err.Error(), "cannot start workers as uid 0") {
		t.Errorf("uid %d asked for root's workers: %v", os.Geteuid(), err)
	}
}
