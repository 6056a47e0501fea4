package worker

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/forkline/forkline/internal/wire"
)

// endpoints are the worker's sockets, one per address of the cluster, in
// the parent's order: the first is the main one, which the serving
// function gets and whose first Accept (or ReadFrom) makes the worker
// ready.
type endpoints struct {
	spec []wire.Listener
	ls   []*listener   // stream sockets; nil at a datagram one
	pcs  []*packetConn // datagram sockets; nil at a stream one
}

func (e *endpoints) addr(i int) string    { return e.spec[i].Addr }
func (e *endpoints) network(i int) string { return e.spec[i].Network }

// openEndpoints takes the welcome's descriptors: one per address, then the
// heartbeat socket, whose pings a goroutine of its own answers.
func (wk *Worker) openEndpoints() (*endpoints, error) {
	fds := wk.fds
	wk.fds = nil
	if wk.welcome.Heartbeat {
		wk.stopBeats = answerBeats(fds[len(fds)-1])
		fds = fds[:len(fds)-1]
	}
	e := &endpoints{spec: wk.welcome.Listeners}
	for i, l := range e.spec {
		main := i == 0
		if strings.HasPrefix(l.Network, "udp") {
			pc, err := packetOf(fds[i], l)
			if err != nil {
				wire.CloseFDs(fds[i+1:])
				e.close()
				return nil, err
			}
			e.ls, e.pcs = append(e.ls, nil), append(e.pcs, &packetConn{UDPConn: pc, wk: wk, main: main})
			continue
		}
		ln, err := listenerOf(fds[i], l)
		if err != nil {
			wire.CloseFDs(fds[i+1:])
			e.close()
			return nil, err
		}
		e.ls = append(e.ls, &listener{rawListener: ln, wk: wk, main: main, drained: make(chan struct{})})
		e.pcs = append(e.pcs, nil)
	}
	return e, nil
}

func (e *endpoints) drain() {
	for i := range e.spec {
		if e.ls[i] != nil {
			e.ls[i].drain()
		} else {
			e.pcs[i].drain()
		}
	}
}

func (e *endpoints) close() {
	for i := range e.ls {
		if e.ls[i] != nil {
			e.ls[i].Close()
		}
		if i < len(e.pcs) && e.pcs[i] != nil {
			e.pcs[i].Close()
		}
	}
}

// find returns the index of the endpoint named name.
func (e *endpoints) find(name string) (int, error) {
	var names []string
	for i, l := range e.spec {
		if l.Name == name {
			return i, nil
		}
		names = append(names, fmt.Sprintf("%q (%s %s)", l.Name, l.Network, l.Addr))
	}
	return -1, fmt.Errorf("prefork: the cluster serves no address named %q: it serves %s", name, strings.Join(names, ", "))
}

// Listener returns the worker's listener of the stream address named name.
func Listener(ctx context.Context, name string) (net.Listener, error) {
	e, i, err := lookup(ctx, name)
	if err != nil {
		return nil, err
	}
	if e.ls[i] == nil {
		return nil, fmt.Errorf("prefork: address %q is %s: use PacketConn", name, e.network(i))
	}
	return e.ls[i], nil
}

// PacketConn returns the worker's socket of the datagram address named name.
func PacketConn(ctx context.Context, name string) (net.PacketConn, error) {
	e, i, err := lookup(ctx, name)
	if err != nil {
		return nil, err
	}
	if e.pcs[i] == nil {
		return nil, fmt.Errorf("prefork: address %q is %s: use Listener", name, e.network(i))
	}
	return e.pcs[i], nil
}

func lookup(ctx context.Context, name string) (*endpoints, int, error) {
	wk, _ := ctx.Value(workerKey{}).(*Worker)
	if wk == nil || wk.eps == nil {
		return nil, -1, fmt.Errorf("prefork: no worker's sockets in this context (call from the serving function, with its ctx)")
	}
	i, err := wk.eps.find(name)
	return wk.eps, i, err
}

// packetConn is a worker's datagram socket: the worker is ready at its
// first read; from its drain, reads fail with net.ErrClosed and what is
// queued on the socket stays there, for the slot's next worker (the parent
// holds the socket). Every other method is the UDPConn's own.
type packetConn struct {
	*net.UDPConn
	wk       *Worker
	main     bool
	once     sync.Once
	draining atomic.Bool
}

func (p *packetConn) ready() {
	if p.main {
		p.wk.conn.SendControl(&wire.Frame{Type: wire.TypeReady, From: uint32(p.wk.id), Payload: []byte(p.LocalAddr().String())})
	}
}

func (p *packetConn) ReadFrom(b []byte) (int, net.Addr, error) {
	p.once.Do(p.ready)
	if p.draining.Load() {
		return 0, nil, net.ErrClosed
	}
	n, addr, err := p.UDPConn.ReadFrom(b)
	if err != nil && p.draining.Load() {
		return 0, nil, net.ErrClosed
	}
	return n, addr, err
}

func (p *packetConn) drain() {
	p.draining.Store(true)
	p.SetReadDeadline(time.Now())
}
