//go:build !linux

package supervisor

import (
	"errors"
	"time"
)

var errNoQueue = errors.New("accept queue lengths are read on Linux only")

func queueLen(int) (int, error)          { return 0, errNoQueue }
func stopListening(int) error            { return errNoQueue }
func listening(int) bool                 { return true }
func listenQueue(int) (int, int, error)  { return 0, 0, errNoQueue }
func cpuTime(int) (time.Duration, error) { return 0, errNoQueue }
