package supervisor

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// privileged reports whether this process may set its uid, and its gid and
// groups, to others: CAP_SETUID and CAP_SETGID in its effective set (what
// /proc/self/status shows as CapEff, asked of the kernel with capget, which
// needs no /proc). Root has them unless they were taken away (a container's
// bounding set, systemd's CapabilityBoundingSet=); a non-root service may
// have been given them (AmbientCapabilities=).
func privileged() (setuid, setgid bool) {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData // capabilities 0-31, 32-63
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		// A seccomp filter, say: root as the kernel's default.
		root := os.Geteuid() == 0
		return root, root
	}
	eff := data[0].Effective
	return eff&(1<<unix.CAP_SETUID) != 0, eff&(1<<unix.CAP_SETGID) != 0
}

// passedOn says which capabilities a worker of another uid would still
// hold after its exec, and what to do about it; "" when none: this
// process's ambient set, which exec keeps unless the switch cleared it (it
// clears every set of a root process, the ambient one too:
// capabilities(7)), and the executable's file capabilities, which exec
// grants again (a worker is this executable).
func passedOn(root bool) string {
	var amb uint64
	for c := range 64 {
		if root {
			break
		}
		set, err := unix.PrctlRetInt(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_IS_SET, uintptr(c), 0, 0)
		if err != nil {
			break // past the last capability the kernel knows
		}
		if set == 1 {
			amb |= 1 << c
		}
	}
	if amb != 0 {
		return fmt.Sprintf("this process's ambient capabilities (%#x); start the parent as root, whose switch to another user clears them", amb)
	}
	if exe, err := os.Executable(); err == nil {
		if n, err := unix.Getxattr(exe, "security.capability", nil); err == nil && n > 0 {
			return "the file capabilities of " + exe + "; remove them (setcap -r) and start the parent as root"
		}
	}
	return ""
}
