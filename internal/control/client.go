package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"time"
)

// Client is a connection to a control socket. Its requests are answered in
// order; it is not safe for concurrent use. After an error, or a ctx that
// ended, it may only be closed.
type Client struct {
	c *net.UnixConn
	r *bufio.Reader
}

// Dial connects to the control socket at path. Its error says the path and
// the cause in a word ("connection refused", "no such file or directory")
// and wraps the errno, for errors.Is.
func Dial(path string) (*Client, error) {
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		var cause error = err
		var errno syscall.Errno
		if errors.As(err, &errno) {
			cause = errno
		}
		return nil, fmt.Errorf("cannot reach the control socket at %s: %w", path, cause)
	}
	return &Client{c: c, r: bufio.NewReader(c)}, nil
}

// Close closes the connection. Closing it ends a stream of events.
func (c *Client) Close() error { return c.c.Close() }

// Do sends req and returns its answer line, once it came: for a reload,
// once the new generation serves or has failed. An answer with "ok":false
// is returned as an error with the server's text. Use Events and Stop for
// the commands that stream.
func (c *Client) Do(ctx context.Context, req Request) (json.RawMessage, error) {
	defer context.AfterFunc(ctx, func() { c.c.SetDeadline(time.Unix(1, 0)) })()
	b, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	if _, err := c.c.Write(append(b, '\n')); err != nil {
		return nil, c.fail(ctx, err)
	}
	line, err := c.line()
	if err != nil {
		return nil, c.fail(ctx, err)
	}
	var a answer
	if err := json.Unmarshal(line, &a); err != nil {
		return nil, fmt.Errorf("control: malformed answer: %w", err)
	}
	if !a.OK {
		return nil, errors.New(a.Error)
	}
	return line, nil
}

// Status asks for the cluster's status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	line, err := c.Do(ctx, Request{Cmd: "status"})
	if err != nil {
		return Status{}, err
	}
	var a answer
	if err := json.Unmarshal(line, &a); err != nil || a.Status == nil {
		return Status{}, fmt.Errorf("control: malformed status answer: %s", line)
	}
	return *a.Status, nil
}

// Events follows the cluster's events, calling fn with each, until the
// cluster stops (nil) or ctx ends (ctx.Err()).
func (c *Client) Events(ctx context.Context, fn func(Event)) error {
	return c.stream(ctx, Request{Cmd: "events"}, fn)
}

// Stop stops the cluster gracefully and waits until it has stopped,
// calling fn with each of its events meanwhile (the workers' exits). It
// returns nil once the cluster has stopped, ctx.Err() if ctx ends first
// (the stop goes on).
func (c *Client) Stop(ctx context.Context, fn func(Event)) error {
	return c.stream(ctx, Request{Cmd: "stop"}, fn)
}

func (c *Client) stream(ctx context.Context, req Request, fn func(Event)) error {
	if _, err := c.Do(ctx, req); err != nil {
		return err
	}
	defer context.AfterFunc(ctx, func() { c.c.SetDeadline(time.Unix(1, 0)) })()
	for {
		line, err := c.line()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return c.fail(ctx, err)
		}
		var ev Event
		if err := json.Unmarshal(line, &ev); err != nil {
			return fmt.Errorf("control: malformed event: %w", err)
		}
		fn(ev)
	}
}

// line reads one line; at EOF before one, io.EOF.
func (c *Client) line() ([]byte, error) {
	line, err := c.r.ReadBytes('\n')
	if errors.Is(err, io.EOF) && len(line) > 0 {
		return nil, io.ErrUnexpectedEOF
	}
	return line, err
}

// fail is err, or ctx's error when ctx ended the call.
func (c *Client) fail(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if errors.Is(err, io.EOF) {
		return fmt.Errorf("control: the cluster closed the connection without an answer: %w", io.ErrUnexpectedEOF)
	}
	return fmt.Errorf("control: %w", err)
}
