//go:build !linux

package supervisor

// holder cannot name the process that holds a port here.
func holder(string, int) string { return "" }
