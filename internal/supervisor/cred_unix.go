//go:build unix

package supervisor

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"strconv"
	"syscall"
)

// ResolveCredential resolves who the workers run as. user and group are
// each a name or a decimal id (a decimal is an id, whether or not the user
// database knows it, as chown(1) takes one); group "" is the user's primary
// group, which a numeric user must then have an entry for. An unknown name
// is an error naming the field (Config.User or Config.Group) and the value.
// The lookups are os/user's: the C library's (NSS) with cgo, /etc/passwd
// and /etc/group without.
func ResolveCredential(name, group string) (uid, gid uint32, err error) {
	var primary string
	if id, numeric, err := parseID("User", name); numeric {
		if err != nil {
			return 0, 0, err
		}
		uid = id
		if group == "" {
			u, err := user.LookupId(strconv.FormatUint(uint64(id), 10)) // without cgo, "042" would not match
			if err != nil {
				return 0, 0, fmt.Errorf("prefork: Config.User %q: %w (set Config.Group: there is no primary group to default to)", name, err)
			}
			primary = u.Gid
		}
	} else {
		u, err := user.Lookup(name)
		if err != nil {
			return 0, 0, fmt.Errorf("prefork: Config.User %q: %w", name, err)
		}
		if uid, err = dbID("User", name, u.Uid); err != nil {
			return 0, 0, err
		}
		primary = u.Gid
	}
	if group == "" {
		gid, err = dbID("User", name, primary)
		return uid, gid, err
	}
	if id, numeric, err := parseID("Group", group); numeric {
		return uid, id, err
	}
	g, err := user.LookupGroup(group)
	if err != nil {
		return 0, 0, fmt.Errorf("prefork: Config.Group %q: %w", group, err)
	}
	gid, err = dbID("Group", group, g.Gid)
	return uid, gid, err
}

// dbID reads an id the user database gave for a field's value.
func dbID(field, value, id string) (uint32, error) {
	n, numeric, err := parseID(field, id)
	if err != nil || !numeric {
		return 0, fmt.Errorf("prefork: Config.%s %q: the user database gives the id %q", field, value, id)
	}
	return n, nil
}

// parseID reads a decimal id; numeric is false for anything else (a name).
// The largest 32-bit value is (uid_t)-1, "no change" to the kernel: not an id.
func parseID(field, s string) (id uint32, numeric bool, err error) {
	if s == "" {
		return 0, false, nil
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return 0, false, nil
		}
	}
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || n == 1<<32-1 {
		return 0, true, fmt.Errorf("prefork: Config.%s %q: not an id (0 to %d)", field, s, uint32(1<<32-2))
	}
	return uint32(n), true, nil
}

// CheckCredential reports whether this process may start workers as uid
// and gid: it must be root, or hold CAP_SETGID (the supplementary groups
// are cleared with setgroups, which always takes it) and, for another uid,
// CAP_SETUID (Linux) without passing them on (passedOn); ids that are its
// own need no privilege.
func CheckCredential(uid, gid uint32) error {
	_, err := credential(uid, gid)
	return err
}

// credential is the SysProcAttr.Credential that starts a worker as uid
// and gid with no supplementary groups; nil when they are this process's
// own ids and it may not clear its groups (the workers then keep them).
func credential(uid, gid uint32) (*syscall.Credential, error) {
	ownUID := uid == uint32(os.Getuid()) && uid == uint32(os.Geteuid())
	ownGID := gid == uint32(os.Getgid()) && gid == uint32(os.Getegid())
	setuid, setgid := privileged()
	switch {
	case setgid && (ownUID || setuid):
		if !ownUID {
			if kept := passedOn(os.Geteuid() == 0); kept != "" {
				return nil, fmt.Errorf("workers of uid %d would keep capabilities across their exec (with CAP_SETUID they could make themselves root again): %s", uid, kept)
			}
		}
		return &syscall.Credential{Uid: uid, Gid: gid, Groups: []uint32{}}, nil // NoSetGroups false: setgroups(0, NULL)
	case ownUID && ownGID:
		return nil, nil
	}
	return nil, fmt.Errorf("this process (uid %d, gid %d) cannot start workers as uid %d, gid %d: that takes root, or CAP_SETUID and CAP_SETGID",
		os.Geteuid(), os.Getegid(), uid, gid)
}

// workerCredential is a starter's credential for Config.User and Group,
// the ids package prefork resolved; nil without a User.
func workerCredential(user, group string) (*syscall.Credential, error) {
	if user == "" {
		return nil, nil
	}
	uid, uok, uerr := parseID("User", user)
	gid, gok, gerr := parseID("Group", group)
	if err := errors.Join(uerr, gerr); err != nil {
		return nil, err
	}
	if !uok || !gok {
		return nil, fmt.Errorf("prefork: workers' user %q and group %q are not resolved ids", user, group)
	}
	cred, err := credential(uid, gid)
	if err != nil {
		return nil, fmt.Errorf("prefork: %w", err)
	}
	return cred, nil
}

// explainStart says what a failure to execute the worker's program as
// cred means: permission denied is the kernel's answer when that user may
// not read and execute the file or search a directory above it (a
// program under /root, or in a 0700 build directory).
func explainStart(err error, cred *syscall.Credential) error {
	if cred == nil || !errors.Is(err, syscall.EACCES) {
		return err
	}
	return fmt.Errorf("%w: workers run as uid %d, gid %d, who must be able to read and execute it and search every directory above it", err, cred.Uid, cred.Gid)
}
