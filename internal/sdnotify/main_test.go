package sdnotify_test

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"
)

// helperEnv names the helper that the test binary runs instead of its
// tests, when it is its own child.
const helperEnv = "SDNOTIFY_TEST_HELPER"

// helpers are registered by the test files' init functions; a helper
// returns the child's exit status.
var helpers = map[string]func() int{}

func registerHelper(name string, f func() int) {
	if _, dup := helpers[name]; dup {
		panic("sdnotify_test: helper " + name + " registered twice")
	}
	helpers[name] = f
}

func TestMain(m *testing.M) {
	if name, ok := os.LookupEnv(helperEnv); ok {
		f := helpers[name]
		if f == nil {
			fmt.Fprintf(os.Stderr, "sdnotify_test: no helper %q\n", name)
			os.Exit(2)
		}
		os.Exit(f())
	}
	goleak.VerifyTestMain(m)
}
