//go:build !linux

package sdtest

import (
	"errors"
	"fmt"
	"net"
	"runtime"
)

func listen(string) (*net.UnixConn, error) {
	return nil, fmt.Errorf("a fake service manager needs SO_PASSCRED, which %s lacks: %w", runtime.GOOS, errors.ErrUnsupported)
}

func receive(*net.UnixConn, []byte) (Message, error) { return Message{}, errors.ErrUnsupported }
func dup(int) (int, error)                           { return -1, errors.ErrUnsupported }
func closeFD(int)                                    {}
func sameFile(int, int) bool                         { return false }
