//go:build !linux

package sdnotify

import (
	"errors"
	"fmt"
	"runtime"
)

var errUnsupported = fmt.Errorf("systemd's protocols on %s: %w", runtime.GOOS, errors.ErrUnsupported)

func socket() (int, error)                     { return -1, errUnsupported }
func sendmsg(int, string, []byte, []int) error { return errUnsupported }
func closeSocket(int) error                    { return nil }
func monotonicUsec() (int64, error)            { return 0, errUnsupported }
func cloexec(int) error                        { return errUnsupported }
