//go:build !unix || solaris

package reuseport

import (
	"errors"
	"fmt"
	"runtime"
	"syscall"
)

// control is unsupported here. go-reuseport's Control sets only SO_REUSEADDR
// on Windows, which lets another socket take over the port rather than share
// it, and does nothing on plan9 and wasm; illumos has no SO_REUSEPORT, and
// x/sys does not define Solaris 11.4's.
func control(network, address string, c syscall.RawConn) error {
	return fmt.Errorf("SO_REUSEPORT is not available on %s: %w", runtime.GOOS, errors.ErrUnsupported)
}
