package prefork

import (
	"log/slog"
	"os"
	"strconv"

	"github.com/forkline/forkline/internal/sdnotify"
	"github.com/forkline/forkline/internal/supervisor"
)

// serviceManager connects the parent to systemd, when systemd started it:
// the notify socket ($NOTIFY_SOCKET), its watchdog ($WATCHDOG_USEC), the
// sockets it passed ($LISTEN_FDS) and whether it keeps an fd store for us
// ($FDSTORE, set by systemd 254+ when FileDescriptorStoreMax= is positive;
// set it in the unit's Environment= on older versions). The workers see
// none of these variables. It returns the function that closes the
// notify socket.
func serviceManager(sc *supervisor.Config, log *slog.Logger) (closeFn func(), err error) {
	files, err := sdnotify.Listeners()
	if err != nil {
		return nil, err
	}
	for _, f := range files {
		sc.Inherited = append(sc.Inherited, supervisor.Inherited{FD: f.FD, Name: f.Name})
	}
	n, err := sdnotify.FromEnv()
	if err != nil {
		log.Warn("not notifying the service manager", "err", err)
		return func() {}, nil
	}
	if n == nil {
		return func() {}, nil
	}
	sc.Manager = notifier{n}
	if sc.Watchdog, err = sdnotify.WatchdogInterval(); err != nil {
		log.Warn("not pinging the service manager's watchdog", "err", err)
	}
	if v, err := strconv.Atoi(os.Getenv("FDSTORE")); err == nil && v > 0 {
		sc.StoreSockets = true
	}
	return func() { n.Close() }, nil
}

// notifier is an sdnotify.Notifier as the supervisor's Manager.
type notifier struct{ n *sdnotify.Notifier }

func (m notifier) Notify(lines ...string) error               { return m.n.Send(lines...) }
func (m notifier) NotifyFDs(fds []int, lines ...string) error { return m.n.SendFDs(fds, lines...) }
