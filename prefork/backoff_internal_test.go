package prefork

import (
	"testing"
	"time"
)

// The respawn delays: at once, then 100 ms growing by half each time, capped
// at 30 s.
func TestBackoff(t *testing.T) {
	for _, tc := range []struct {
		n    int
		want time.Duration
	}{
		{1, 0},
		{2, 100 * time.Millisecond},
		{3, 150 * time.Millisecond},
		{4, 225 * time.Millisecond},
		{5, 337500 * time.Microsecond},
		{17, 30 * time.Second}, // 100 ms x 1.5^15 = 43.8 s: capped
		{1000, 30 * time.Second},
	} {
		if got := backoff(tc.n); got != tc.want {
			t.Errorf("backoff(%d) = %v, want %v", tc.n, got, tc.want)
		}
	}
	for n := 2; n < 40; n++ {
		if backoff(n) < backoff(n-1) {
			t.Errorf("backoff(%d) = %v < backoff(%d) = %v", n, backoff(n), n-1, backoff(n-1))
		}
	}
}

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
