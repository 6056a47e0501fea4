//go:build unix

package signals

import "golang.org/x/sys/unix"

var table = [...]entry{
	{"HUP", unix.SIGHUP, Reload},
	{"INT", unix.SIGINT, Stop},
	{"QUIT", unix.SIGQUIT, Quit},
	{"TERM", unix.SIGTERM, Stop},
	{"TTIN", unix.SIGTTIN, ScaleUp},
	{"TTOU", unix.SIGTTOU, ScaleDown},
	{"USR2", unix.SIGUSR2, Upgrade},
}
