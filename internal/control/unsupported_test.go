//go:build !linux && !darwin && !freebsd

package control

import (
	"errors"
	"path/filepath"
	"testing"
)

func TestListenUnsupported(t *testing.T) {
	ln, err := Listen(filepath.Join(t.TempDir(), "c.sock"))
	if !errors.Is(err, errors.ErrUnsupported) {
		if ln != nil {
			ln.Close()
		}
		t.Fatalf("Listen: %v, want errors.ErrUnsupported", err)
	}
}
