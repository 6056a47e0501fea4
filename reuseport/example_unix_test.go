//go:build unix && !solaris

package reuseport_test

import (
	"context"
	"fmt"
	"net"
	"syscall"

	"github.com/forkline/forkline/reuseport"
)

// An application that already has a ListenConfig with its own Control calls
// that first and reuseport.Control last, so that its options cannot switch
// SO_REUSEPORT off again and its failures stop the listen early.
func ExampleControl() {
	app := net.ListenConfig{
		Control: func(network, address string, c syscall.RawConn) error {
			fmt.Println("application options for", network, address)
			return nil
		},
	}

	lc := app // keep the application's other settings
	lc.Control = func(network, address string, c syscall.RawConn) error {
		if app.Control != nil {
			if err := app.Control(network, address, c); err != nil {
				return err
			}
		}
		return reuseport.Control(network, address, c)
	}

	ln, err := lc.Listen(context.Background(), "tcp4", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer ln.Close()
	fmt.Println("listening with SO_REUSEPORT")
	// Output:
	// application options for tcp4 127.0.0.1:0
	// listening with SO_REUSEPORT
}
