package signals_test

import (
	"context"
	"fmt"
	"os"

	"github.com/oklog/run"

	"github.com/forkline/forkline/signals"
)

// A supervisor loop owns the state; the signal actor only hands it actions.
// Here a cancelled context stands in for the end of the program: it ends the
// signal actor, and oklog/run then interrupts the supervisor.
func ExampleHandler() {
	ctx, cancel := context.WithCancel(context.Background())
	actions := make(chan signals.Action)
	done := make(chan struct{})

	var g run.Group
	g.Add(signals.Handler(ctx, func(sig os.Signal, a signals.Action) {
		select {
		case actions <- a: // the supervisor acts on it
		case <-done: // the supervisor has stopped: never block execute
		}
	}))
	g.Add(func() error {
		for {
			select {
			case a := <-actions:
				switch a {
				case signals.Reload, signals.ScaleUp, signals.ScaleDown:
					// start or stop workers
				case signals.Stop, signals.Quit:
					return nil // after draining, or killing, the workers
				}
			case <-done:
				return nil
			}
		}
	}, func(error) { close(done) })

	cancel()
	fmt.Println(g.Run())
	// Output: <nil>
}

func ExampleParse() {
	sig, err := signals.Parse("sigterm")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(signals.ActionOf(sig))

	_, err = signals.Parse("FOO")
	fmt.Println(err != nil)
	// Output:
	// stop
	// true
}
