// Command udpecho answers each datagram with the worker that read it:
// "worker=<id> gen=<gen>". Every worker reads from its own SO_REUSEPORT
// socket; the parent keeps each slot's socket across crashes and reloads,
// so the datagrams queued on it are read by the slot's next worker.
//
//	go build -o udpecho ./examples/udpecho && ./udpecho -addr 127.0.0.1:9053 -workers 2
//	echo hi | nc -u -w1 127.0.0.1 9053      # worker=1 gen=1
//	kill -HUP <parent pid>                  # a new generation answers
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"

	"github.com/forkline/forkline/prefork"
)

func main() {
	cfg := prefork.Config{Network: "udp"}
	flag.StringVar(&cfg.Addr, "addr", "127.0.0.1:9053", "UDP address to serve on")
	flag.IntVar(&cfg.Workers, "workers", 0, "worker processes (0: one per CPU)")
	flag.Parse()
	if err := prefork.New(cfg).ServePacket(echo); err != nil {
		log.Fatal(err)
	}
}

// echo answers until the drain: then ReadFrom fails with net.ErrClosed,
// and what is queued stays on the socket for the next worker.
func echo(ctx context.Context, pc net.PacketConn) error {
	reply := fmt.Appendf(nil, "worker=%d gen=%d\n", prefork.WorkerID(), prefork.Generation())
	buf := make([]byte, 64<<10)
	for {
		_, from, err := pc.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil // drained
			}
			return err
		}
		pc.WriteTo(reply, from)
	}
}
