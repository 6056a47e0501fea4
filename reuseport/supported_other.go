//go:build !linux && !freebsd

package reuseport

// The kernel shares the port here (on unix) but does not balance, or
// SO_REUSEPORT does not exist at all.
func supported() bool { return false }
