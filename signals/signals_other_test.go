//go:build !unix

package signals

import (
	"os"
	"syscall"
	"testing"
)

func TestTable(t *testing.T) {
	for _, tc := range []struct {
		name string
		sig  os.Signal
		want Action
	}{
		{"INT", os.Interrupt, Stop},
		{"TERM", syscall.SIGTERM, Stop},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ActionOf(tc.sig); got != tc.want {
				t.Errorf("ActionOf(%v) = %v, want %v", tc.sig, got, tc.want)
			}
			if got, err := Parse(tc.name); err != nil || got != tc.sig {
				t.Errorf("Parse(%q) = %v, %v; want %v", tc.name, got, err, tc.sig)
			}
		})
	}
	if _, err := Parse("HUP"); err == nil {
		t.Error("Parse(HUP) succeeded without SIGHUP")
	}
}
