package harness

import (
	"context"
	"fmt"
	"time"
)

// Pause waits d, or less if ctx ends first, and reports whether ctx is
// still live. It paces polls (Poll, WaitDistinct) and times a measurement's
// phases; it never stands in for a notification the kernel gives.
func Pause(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// Poll calls cond every interval until it is true, and fails once limit
// has passed or ctx has ended. It is for states the kernel does not notify:
// a process that is not our child exiting, a process group emptying.
func Poll(ctx context.Context, every, limit time.Duration, cond func() bool) error {
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not so within %v", limit)
		}
		if !Pause(ctx, every) {
			return ctx.Err()
		}
	}
	return nil
}
