package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/forkline/forkline/bench/internal/harness"
)

// follower reads the lines a log gains. It waits for the log to change
// with inotify (IN_MODIFY), so that a line is read as soon as it is
// written; without inotify it looks every fallback.
type follower struct {
	f       *os.File
	ino     *os.File // nil: no inotify
	pending []byte
}

// fallback bounds a wait for the log: also the pace of the looks when
// inotify is not there.
const fallback = 5 * time.Millisecond

func follow(path string) (*follower, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	fl := &follower{f: f}
	fd, err := syscall.InotifyInit1(syscall.IN_NONBLOCK | syscall.IN_CLOEXEC)
	if err != nil {
		harness.Logf("inotify: %v; looking at the log every %v", err, fallback)
		return fl, nil
	}
	if _, err := syscall.InotifyAddWatch(fd, path, syscall.IN_MODIFY); err != nil {
		syscall.Close(fd)
		harness.Logf("inotify: %v; looking at the log every %v", err, fallback)
		return fl, nil
	}
	fl.ino = os.NewFile(uintptr(fd), "inotify") // non-blocking: Go's poller waits on it, deadlines work
	return fl, nil
}

func (fl *follower) close() {
	fl.f.Close()
	if fl.ino != nil {
		fl.ino.Close()
	}
}

// skip drops what the log holds so far.
func (fl *follower) skip() error {
	fl.pending = fl.pending[:0]
	_, err := fl.f.Seek(0, io.SeekEnd)
	return err
}

// lines returns the complete lines the log has gained.
func (fl *follower) lines() ([]string, error) {
	var buf [32 << 10]byte
	for range 64 { // at most 2 MiB per look
		n, err := fl.f.Read(buf[:])
		fl.pending = append(fl.pending, buf[:n]...)
		if err == io.EOF || n == 0 {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	var out []string
	for {
		i := bytes.IndexByte(fl.pending, '\n')
		if i < 0 {
			return out, nil
		}
		out = append(out, string(fl.pending[:i]))
		fl.pending = fl.pending[i+1:]
	}
}

// wait returns when the log may have changed, after d at most, or when
// ctx ends (false).
func (fl *follower) wait(ctx context.Context, d time.Duration) bool {
	if fl.ino == nil {
		return harness.Pause(ctx, d)
	}
	var buf [4096]byte
	fl.ino.SetReadDeadline(time.Now().Add(d))
	_, err := fl.ino.Read(buf[:]) // the events themselves do not matter: the log is read anyway
	if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
		harness.Logf("inotify: %v; looking at the log every %v", err, fallback)
		fl.ino.Close()
		fl.ino = nil
	}
	return ctx.Err() == nil
}

// record is one log line: slog's text (key=value, values quoted when
// needed) or JSON.
type record struct {
	msg, level string
	t          time.Time
	kv         map[string]string
}

func parseRecord(line string) (record, bool) {
	line = strings.TrimSpace(line)
	r := record{kv: map[string]string{}}
	if strings.HasPrefix(line, "{") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) != nil {
			return r, false
		}
		for k, v := range m {
			if s, ok := v.(string); ok {
				r.kv[k] = s
			} else {
				r.kv[k] = fmt.Sprint(v)
			}
		}
	} else {
		s := line
		for s != "" {
			s = strings.TrimLeft(s, " ")
			eq := strings.IndexByte(s, '=')
			if eq <= 0 || strings.ContainsAny(s[:eq], " \"") {
				break
			}
			key, rest := s[:eq], s[eq+1:]
			var val string
			if strings.HasPrefix(rest, `"`) {
				q, err := strconv.QuotedPrefix(rest)
				if err != nil {
					val, rest = rest, ""
				} else {
					val, _ = strconv.Unquote(q)
					rest = rest[len(q):]
				}
			} else if sp := strings.IndexByte(rest, ' '); sp >= 0 {
				val, rest = rest[:sp], rest[sp:]
			} else {
				val, rest = rest, ""
			}
			r.kv[key] = val
			s = rest
		}
	}
	r.msg, r.level = r.kv["msg"], strings.ToUpper(r.kv["level"])
	if t, err := time.Parse(time.RFC3339Nano, r.kv["time"]); err == nil {
		r.t = t
	}
	return r, r.msg != ""
}
