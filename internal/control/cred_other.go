//go:build !linux && !darwin && !freebsd

package control

import "syscall"

// Here x/sys/unix has no reader of a unix socket's peer credentials
// (OpenBSD's SO_PEERCRED, NetBSD's LOCAL_PEEREID, getpeereid), or there is
// no unix socket: Listen refuses to start.
const peerCredSupported = false

func peerCred(syscall.RawConn) (uid, pid int, err error) { return -1, 0, errNoPeerCred }
