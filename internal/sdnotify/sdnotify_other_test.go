//go:build !linux

package sdnotify_test

import (
	"errors"
	"os"
	"strconv"
	"testing"

	"github.com/forkline/forkline/internal/sdnotify"
)

func TestUnsupported(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "/run/systemd/notify")
	if n, err := sdnotify.FromEnv(); n != nil || !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("FromEnv() = %v, %v; want nil, errors.ErrUnsupported", n, err)
	}
	t.Setenv("LISTEN_PID", strconv.Itoa(os.Getpid()))
	t.Setenv("LISTEN_FDS", "1")
	if files, err := sdnotify.Listeners(); files != nil || !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("Listeners() = %v, %v; want nil, errors.ErrUnsupported", files, err)
	}
}
