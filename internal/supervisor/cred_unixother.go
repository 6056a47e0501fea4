//go:build unix && !linux

package supervisor

import "os"

// privileged reports whether this process may set its uid, and its gid and
// groups, to others: here, whether it is root.
func privileged() (setuid, setgid bool) {
	root := os.Geteuid() == 0
	return root, root
}

// passedOn is empty: only root switches users here, and the switch leaves
// it nothing to pass on.
func passedOn(bool) string { return "" }
