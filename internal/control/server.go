package control

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"time"
)

// Limits of a connection.
const (
	maxLine      = 64 << 10         // a request line, its newline included
	idleTimeout  = time.Minute      // waiting for the next request
	writeTimeout = 10 * time.Second // writing one answer or event
)

// Serve answers the connections of ln with h until ctx is cancelled, each
// on a goroutine of its own, then closes ln (which removes the file of a
// listener from Listen) and every connection, waits until their
// goroutines have returned (the handler's calls in flight see their ctx
// end), and returns nil. If ln is closed by someone else, Serve cleans up
// the same way and returns that error; other Accept errors (out of
// descriptors) are logged and retried, as net/http does. log nil means
// slog.Default().
func Serve(ctx context.Context, ln *net.UnixListener, h Handler, log *slog.Logger) error {
	if log == nil {
		log = slog.Default()
	}
	ctx, cancel := context.WithCancel(ctx)
	s := &server{ctx: ctx, h: h, log: log, uid: os.Geteuid(), conns: map[*net.UnixConn]struct{}{}}
	s.wg.Go(func() {
		<-ctx.Done()
		ln.Close()
	})
	var err error
	for delay := time.Duration(0); ; {
		c, aerr := ln.AcceptUnix()
		if aerr == nil {
			delay = 0
			s.start(c)
			continue
		}
		if ctx.Err() != nil {
			break
		}
		if errors.Is(aerr, net.ErrClosed) {
			err = fmt.Errorf("control: %w", aerr)
			break
		}
		delay = min(max(2*delay, 5*time.Millisecond), time.Second)
		log.Warn("control socket: accept failed, retrying", "err", aerr, "delay", delay)
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}
	cancel()
	ln.Close()
	s.closeAll()
	s.wg.Wait()
	return err
}

// server is one Serve: the connections it owns.
type server struct {
	ctx context.Context // ends when Serve ends
	h   Handler
	log *slog.Logger
	uid int // ours: with root's, the only one answered

	wg     sync.WaitGroup // the connections' goroutines, and the closer of ln
	mu     sync.Mutex
	conns  map[*net.UnixConn]struct{}
	closed bool // closeAll ran: a connection accepted since is closed at once
}

func (s *server) start(c *net.UnixConn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		c.Close()
		return
	}
	s.conns[c] = struct{}{}
	s.wg.Go(func() { s.serve(c) })
}

func (s *server) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for c := range s.conns {
		c.Close()
	}
}

// serve answers one connection's requests, in order, until it ends.
func (s *server) serve(c *net.UnixConn) {
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		c.Close()
	}()
	ss := &session{server: s, c: c, r: bufio.NewReaderSize(c, maxLine)}
	if !ss.admit() {
		return
	}
	for {
		c.SetReadDeadline(time.Now().Add(idleTimeout))
		line, err := ss.r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			if !ss.answer(answer{}, fmt.Errorf("request line over %d KiB", maxLine>>10)) {
				return
			}
			for errors.Is(err, bufio.ErrBufferFull) { // skip the rest of it
				c.SetReadDeadline(time.Now().Add(idleTimeout))
				_, err = ss.r.ReadSlice('\n')
			}
			if err != nil {
				return
			}
			continue
		}
		// A last line without its newline is a request too (a client
		// that shut its side down after writing).
		last := err != nil
		if last && (!errors.Is(err, io.EOF) || len(line) == 0) {
			return
		}
		if line = bytes.TrimSpace(line); len(line) > 0 && !ss.do(line) {
			return
		}
		if last {
			return
		}
	}
}

// session is a connection's side of the protocol.
type session struct {
	*server
	c *net.UnixConn
	r *bufio.Reader
}

// admit answers only our own user and root, by the peer's credentials.
func (s *session) admit() bool {
	uid, pid := -1, 0
	rc, err := s.c.SyscallConn()
	if err == nil {
		uid, pid, err = peerCred(rc)
	}
	if err != nil {
		s.log.Warn("control socket: refused a connection whose credentials cannot be read", "err", err)
		s.answer(answer{}, errors.New("permission denied: cannot read your credentials"))
		return false
	}
	if uid == s.uid || uid == 0 {
		return true
	}
	s.log.Warn("control socket: refused a connection from another user", "uid", uid, "pid", pid)
	s.answer(answer{}, fmt.Errorf("permission denied: uid %d is neither the cluster's (uid %d) nor root", uid, s.uid))
	return false
}

// answer is a line answering a request: OK and the command's result, or
// Error.
type answer struct {
	OK         bool    `json:"ok"`
	Error      string  `json:"error,omitempty"`
	Status     *Status `json:"status,omitempty"`     // status
	Generation int     `json:"generation,omitempty"` // reload: the one that serves now
	Workers    int     `json:"workers,omitempty"`    // scale: the workers wanted now
	Was        int     `json:"was,omitempty"`        // scale: and before
}

// do carries out one request line and answers it; false ends the
// connection.
func (s *session) do(line []byte) bool {
	req, err := parse(line)
	if err != nil {
		return s.answer(answer{}, err)
	}
	switch req.Cmd {
	case "status":
		st, err := s.h.Status(s.ctx)
		return s.answer(answer{Status: &st}, err)
	case "reload":
		var a answer
		err := s.h.Reload(s.ctx)
		if err == nil {
			if st, serr := s.h.Status(s.ctx); serr == nil {
				a.Generation = st.Generation
			}
		}
		return s.answer(a, err)
	case "scale":
		a, err := s.scale(req.N)
		return s.answer(a, err)
	case "kill":
		sig, _ := parseSignal(req.Signal) // checked by parse
		return s.answer(answer{}, s.h.Kill(req.ID, sig))
	case "stop", "events":
		ctx, cancel := context.WithCancel(s.ctx)
		defer cancel()
		// Subscribed before the stop begins, so that no exit is missed.
		events, err := s.h.Events(ctx)
		if req.Cmd == "stop" {
			if err := s.h.Stop(s.ctx); err != nil {
				return s.answer(answer{}, err)
			}
			err = nil // without events, the stream is only the EOF at the end
		}
		if err != nil {
			return s.answer(answer{}, err)
		}
		if s.answer(answer{}, nil) {
			s.stream(ctx, cancel, events)
		}
		return false
	case "upgrade":
		return s.answer(answer{}, s.h.Upgrade(s.ctx))
	}
	return s.answer(answer{}, fmt.Errorf("unknown command %q", req.Cmd)) // parse let none through
}

// scale resolves n against the workers wanted now and scales.
func (s *session) scale(n string) (answer, error) {
	k, _ := strconv.Atoi(n) // checked by parse
	st, err := s.h.Status(s.ctx)
	if err != nil {
		return answer{}, err
	}
	want := k
	if n[0] == '+' || n[0] == '-' {
		want = st.Workers + k
	}
	if want < 1 {
		return answer{}, fmt.Errorf("%s would leave %d workers of %d; 1 at least", n, want, st.Workers)
	}
	if err := s.h.Scale(want); err != nil {
		return answer{}, err
	}
	return answer{Workers: want, Was: st.Workers}, nil
}

// stream writes events until the channel closes, the client leaves (a
// read of its side ends) or Serve ends; then the connection closes.
func (s *session) stream(ctx context.Context, cancel context.CancelFunc, events <-chan Event) {
	s.c.SetReadDeadline(time.Time{})
	left := make(chan struct{})
	go func() {
		defer close(left)
		io.Copy(io.Discard, s.r)
		cancel()
	}()
	defer func() {
		s.c.Close()
		<-left
	}()
	for {
		select {
		case ev, ok := <-events:
			if !ok || s.send(ev) != nil {
				return
			}
		case <-ctx.Done():
			return
		}
	}
}

// answer writes a, or err when it is not nil, and reports whether the
// connection can go on.
func (s *session) answer(a answer, err error) bool {
	if err != nil {
		a = answer{Error: err.Error()}
	} else {
		a.OK = true
	}
	return s.send(a) == nil
}

func (s *session) send(v any) error {
	b, err := json.Marshal(v)
	if err != nil { // a NaN in a Status, say
		b, _ = json.Marshal(answer{Error: "control: cannot encode the answer: " + err.Error()})
	}
	s.c.SetWriteDeadline(time.Now().Add(writeTimeout))
	_, err = s.c.Write(append(b, '\n'))
	return err
}

// parse decodes one request line and checks its arguments, so that a bad
// request is refused before the handler hears of it.
func parse(line []byte) (Request, error) {
	var req Request
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return req, fmt.Errorf("malformed request: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return req, errors.New("malformed request: more than one JSON value on the line")
	}
	switch req.Cmd {
	case "status", "reload", "stop", "events", "upgrade":
		if req != (Request{Cmd: req.Cmd}) {
			return req, fmt.Errorf("%s takes no arguments", req.Cmd)
		}
	case "scale":
		if req.ID != 0 || req.Signal != "" {
			return req, errors.New("scale takes only n")
		}
		k, err := strconv.Atoi(req.N)
		if err != nil {
			return req, fmt.Errorf(`n is %q, not a count such as "4", "+1" or "-1"`, req.N)
		}
		if relative := req.N[0] == '+' || req.N[0] == '-'; !relative && k < 1 {
			return req, fmt.Errorf("n is %d; 1 at least", k)
		}
	case "kill":
		if req.N != "" {
			return req, errors.New("kill takes only id and signal")
		}
		if req.ID < 1 {
			return req, errors.New("kill needs id, a worker's slot: 1 or more")
		}
		if _, err := parseSignal(req.Signal); err != nil {
			return req, err
		}
	default:
		return req, fmt.Errorf("unknown command %q: status, reload, scale, kill, stop, events or upgrade", req.Cmd)
	}
	return req, nil
}
