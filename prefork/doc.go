// Package prefork implements a prefork server cluster: one binary whose
// parent process supervises N worker processes, each serving from its own
// SO_REUSEPORT socket on the same address, so that the kernel spreads
// connections across them and the parent never touches a request. It is Go's
// answer to Node.js's cluster module.
//
//	func main() {
//		http.HandleFunc("/", hello)
//		if err := prefork.Run(http.DefaultServeMux); err != nil {
//			log.Fatal(err)
//		}
//	}
//
// # Two roles, one binary
//
// The parent starts each worker by executing its own executable again, with
// the same arguments and environment plus the worker's identity
// ([IsWorker], [WorkerID], [Generation]). Code before Run runs in the parent
// and in every worker. The executable's path is resolved when the parent
// starts, and the file is read again at every start, so a binary replaced on
// disk is what a reload runs. `go run` builds into a temporary directory
// that may be gone by then: build the binary.
//
// # Sockets
//
// In [ModeReusePort] the parent binds one SO_REUSEPORT socket per worker
// slot and keeps its copy for as long as the slot exists; each worker accepts
// from its slot's socket. When a worker dies or is replaced in a reload, the
// connections waiting in its socket's accept queue stay there for the next
// worker of the slot instead of being reset. In [ModeInherit] (the fallback
// where the kernel does not balance SO_REUSEPORT) the parent binds one
// socket and every worker accepts from it. In both modes the parent never
// calls accept.
//
// # Supervision
//
// A worker that exits without being asked is replaced in its slot: at once
// the first time, then with an exponential backoff (x1.5, from 100 ms up to
// 30 s) while it keeps failing; the count resets once a worker has stayed
// ready for 10 s. If a worker fails before every worker has been ready once,
// the start has failed: Run stops the other workers and returns a
// [*WorkerError] carrying the worker's own cause.
//
// Workers learn of the parent's death by EOF on their channel and exit
// within a second. With
// Config.HeartbeatTimeout set, a worker that stops answering the parent's
// probes is replaced.
//
// # Events
//
// Config.OnEvent receives each worker's events (Node's fork, online,
// listening, disconnect, exit) and the cluster's (ready, reloading,
// reloaded, stopping), one at a time, in the order they happened, on a
// goroutine of its own; a callback may call the Cluster's methods.
//
// # Signals
//
// The parent handles signals as package signals describes: SIGHUP reloads,
// SIGTERM and SIGINT stop gracefully (a second SIGINT stops at once), SIGQUIT
// stops at once, SIGTTIN and SIGTTOU add or remove a worker. Workers run in
// process groups of their own, so that a signal to the parent's group (a ^C
// at a terminal) reaches the parent only: the parent decides. Workers ignore
// SIGINT, SIGHUP, SIGTTIN and SIGTTOU. A worker that gets SIGTERM from
// anyone but the parent tells the parent and serves on until the parent
// drains it: once its replacement serves, or with the rest when the
// cluster stops. A signal that arrives during a reload is applied after it.
//
// # Platforms
//
// Linux and FreeBSD balance SO_REUSEPORT; other Unix systems run in
// ModeInherit. On Windows and other non-Unix systems Run returns an error
// satisfying errors.Is(err, errors.ErrUnsupported).
//
// # systemd
//
//	[Service]
//	ExecStart=/usr/local/bin/myserver
//	ExecReload=/bin/kill -HUP $MAINPID
//	KillMode=mixed
//	TimeoutStopSec=15
//
// KillMode=mixed sends SIGTERM to the parent only and lets it drain its
// workers; the default (control-group) sends SIGTERM to every process at
// once, which drains the workers the same way, since each waits for the
// parent's word.
package prefork
