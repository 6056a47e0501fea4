//go:build !unix || solaris

package reuseport_test

import (
	"context"
	"errors"
	"testing"

	"github.com/forkline/forkline/reuseport"
)

func TestUnsupported(t *testing.T) {
	if reuseport.Supported() {
		t.Error("Supported() = true without SO_REUSEPORT")
	}
	if err := reuseport.Control("tcp", "127.0.0.1:0", nil); !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("Control = %v, want errors.ErrUnsupported", err)
	}
	ln, err := reuseport.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err == nil {
		ln.Close()
		t.Fatal("Listen succeeded without SO_REUSEPORT")
	}
	if !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("Listen = %v, want errors.ErrUnsupported", err)
	}
}
