package prefork

import (
	"runtime"
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
	if err := (Config{Network: "udp"}).normalized().check(); err == nil {
		t.Error("udp accepted")
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
