//go:build !linux

// Package steer is Linux's: elsewhere New says so.
package steer

import (
	"errors"
	"fmt"
	"runtime"
)

const MaxSlots = 1024

var (
	ErrPermission  = errors.New("steer: loading an eBPF program needs CAP_BPF (or root)")
	ErrUnsupported = fmt.Errorf("steer: SK_REUSEPORT programs are Linux's, not %s: %w", runtime.GOOS, errors.ErrUnsupported)
)

// Group does nothing here.
type Group struct{}

func New() (*Group, error)               { return nil, ErrUnsupported }
func Adopt([]int) (*Group, error)        { return nil, ErrUnsupported }
func (g *Group) FDs() []int              { return nil }
func (g *Group) Attach(int) error        { return ErrUnsupported }
func (g *Group) Add(int, int) error      { return ErrUnsupported }
func (g *Group) Remove(int) error        { return nil }
func (g *Group) SetEligible([]int) error { return ErrUnsupported }
func (g *Group) Close() error            { return nil }
