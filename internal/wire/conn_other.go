//go:build !unix

package wire

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"
)

// errUnsupported is returned where there are no unix sockets to pass
// descriptors over.
var errUnsupported = fmt.Errorf("wire: %w on this platform", errors.ErrUnsupported)

// Pair returns an error wrapping errors.ErrUnsupported on this platform.
func Pair() (a, b *os.File, err error) { return nil, nil, errUnsupported }

// Conn is one end of a framed channel. On this platform none can be made.
type Conn struct{}

// NewConn closes f and returns an error wrapping errors.ErrUnsupported on
// this platform.
func NewConn(f *os.File, opts Options) (*Conn, error) {
	if f != nil {
		f.Close()
	}
	return nil, errUnsupported
}

// Send returns an error wrapping ErrClosed.
func (c *Conn) Send(f *Frame) error { return fmt.Errorf("%w: %w", ErrClosed, errUnsupported) }

// SendWait returns an error wrapping ErrClosed.
func (c *Conn) SendWait(ctx context.Context, f *Frame) error { return c.Send(f) }

// SendDirect is Send; see the unix version.
func (c *Conn) SendDirect(f *Frame) error { return c.Send(f) }

// SendControl is Send without the queue bound; see the unix version.
func (c *Conn) SendControl(f *Frame) error { return c.Send(f) }

// Recv returns an error wrapping ErrClosed.
func (c *Conn) Recv() (Frame, error) { return Frame{}, fmt.Errorf("%w: %w", ErrClosed, errUnsupported) }

// CloseFDs does nothing: no frame carries descriptors here.
func CloseFDs([]int) {}

// SetSendLimit does nothing.
func (c *Conn) SetSendLimit(int) {}

// SendLimit returns 0.
func (c *Conn) SendLimit() int { return 0 }

// SetReadDeadline returns an error wrapping errors.ErrUnsupported.
func (c *Conn) SetReadDeadline(time.Time) error { return errUnsupported }

// Close does nothing.
func (c *Conn) Close() error { return nil }
