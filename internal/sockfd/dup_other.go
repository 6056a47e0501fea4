//go:build !unix || aix

package sockfd

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"syscall"
)

// Dup is not available on this platform: the error satisfies
// errors.Is(err, errors.ErrUnsupported).
func Dup(c syscall.Conn) (*os.File, error) {
	_, err := DupFD(c)
	return nil, err
}

// DupFD is not available on this platform either.
func DupFD(c syscall.Conn) (int, error) {
	return -1, fmt.Errorf("sockfd: duplicating descriptors on %s: %w", runtime.GOOS, errors.ErrUnsupported)
}
