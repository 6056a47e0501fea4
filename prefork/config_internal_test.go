package prefork

import (
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
