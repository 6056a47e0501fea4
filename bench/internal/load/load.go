// Package load is a set of closed-loop HTTP clients that record every
// request: its start and end, its outcome and the worker (pid, generation)
// that answered. Suites that count failed requests through a disruption
// (reload, and the coming upgrade and steer suites) share it.
//
// Each client sends one request at a time: "GET <Path>" on a new
// connection ("Connection: close") or, with KeepAlive, on its connection
// until the server answers "Connection: close" (then it reconnects: not a
// failure). Before reusing an idle connection it checks, without waiting,
// that the server has not closed it meanwhile, and reconnects if it has, as
// net/http's Transport and browsers do (CheckIdle). Every request has a
// deadline of Timeout, connect included.
package load

import (
	"bufio"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"sync"
	"syscall"
	"time"
)

// Config describes the clients.
type Config struct {
	Addr        string
	Path        string // default "/"
	Clients     int
	KeepAlive   bool
	CheckIdle   bool          // with KeepAlive: reconnect when the server closed an idle connection
	Think       time.Duration // each client pauses a random time in [0, Think] after each request (0: closed loop)
	Timeout     time.Duration // of one request, connect included
	MaxRequests int           // bound on the requests recorded, all clients together
	Seed        uint64
}

// Record is one request. Times are nanoseconds since the load started.
type Record struct {
	Start, End int64
	Pid, Gen   int32
	Kind       uint16 // 0: ok; else a failure, named by KindName
	Reused     bool   // sent on a connection that had served a request before
}

// OK says whether the request got its hello.
func (r Record) OK() bool { return r.Kind == 0 }

// kinds interns the names of failures; index 0 is "ok".
var kinds = struct {
	sync.Mutex
	names []string
	index map[string]uint16
}{names: []string{"ok"}, index: map[string]uint16{"ok": 0}}

func kindOf(name string) uint16 {
	kinds.Lock()
	defer kinds.Unlock()
	k, ok := kinds.index[name]
	if !ok {
		k = uint16(len(kinds.names))
		kinds.names = append(kinds.names, name)
		kinds.index[name] = k
	}
	return k
}

// KindName names a Record's Kind: "ok", or the step that failed and the
// error's cause ("connect:refused", "read:eof", "status:503", ...).
func KindName(k uint16) string {
	kinds.Lock()
	defer kinds.Unlock()
	return kinds.names[k]
}

// errKind names a failure by the step that failed and the error's cause.
func errKind(step string, err error) string {
	var cause string
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		cause = "refused"
	case errors.Is(err, syscall.ECONNRESET):
		cause = "reset"
	case errors.Is(err, syscall.EPIPE):
		cause = "broken-pipe"
	case errors.Is(err, os.ErrDeadlineExceeded):
		cause = "timeout"
	case errors.Is(err, io.ErrUnexpectedEOF):
		cause = "unexpected-eof"
	case errors.Is(err, io.EOF):
		cause = "eof"
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		cause = "no-local-port"
	default:
		cause = err.Error()
		if len(cause) > 60 {
			cause = cause[:60]
		}
	}
	return step + ":" + cause
}

// Load is the clients at work.
type Load struct {
	cfg     Config
	t0      time.Time
	clients []*client
	stopC   chan struct{}
	wg      sync.WaitGroup
}

// Start starts the clients.
func Start(cfg Config) *Load {
	if cfg.Path == "" {
		cfg.Path = "/"
	}
	l := &Load{cfg: cfg, stopC: make(chan struct{}), t0: time.Now()}
	perClient := max(cfg.MaxRequests/cfg.Clients, 1)
	req := "GET " + cfg.Path + " HTTP/1.1\r\nHost: " + cfg.Addr + "\r\nUser-Agent: forkline-bench\r\n"
	if !cfg.KeepAlive {
		req += "Connection: close\r\n"
	}
	req += "\r\n"
	for i := range cfg.Clients {
		c := &client{
			cfg:  cfg,
			t0:   l.t0,
			req:  []byte(req),
			br:   bufio.NewReaderSize(nil, 4096),
			recs: make([]Record, 0, min(perClient, 1<<16)),
			max:  perClient,
			rng:  rand.New(rand.NewPCG(cfg.Seed, uint64(i))),
		}
		l.clients = append(l.clients, c)
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			c.run(l.stopC)
		}()
	}
	return l
}

// T0 is when the load started.
func (l *Load) T0() time.Time { return l.t0 }

// Since is t in nanoseconds since the load started, as in Records.
func (l *Load) Since(t time.Time) int64 { return int64(t.Sub(l.t0)) }

// Stop ends the load, waits for every client (each within one request
// timeout) and returns all records, and how many idle connections the
// clients found closed by the server (reconnected, not failures).
func (l *Load) Stop() (recs []Record, stale int) {
	close(l.stopC)
	l.wg.Wait()
	n := 0
	for _, c := range l.clients {
		n += len(c.recs)
	}
	recs = make([]Record, 0, n)
	for _, c := range l.clients {
		recs = append(recs, c.recs...)
		stale += c.stale
	}
	return recs, stale
}
