//go:build !unix

package supervisor

import (
	"errors"
	"fmt"
	"runtime"
)

var errCredential = fmt.Errorf("prefork: Config.User and Config.Group: workers cannot run as another user on %s: %w", runtime.GOOS, errors.ErrUnsupported)

// ResolveCredential fails: there are no uids and gids to switch to here.
func ResolveCredential(string, string) (uid, gid uint32, err error) { return 0, 0, errCredential }

// CheckCredential fails: workers run as the parent's user here.
func CheckCredential(uint32, uint32) error { return errCredential }
