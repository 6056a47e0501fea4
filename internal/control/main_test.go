package control

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"
)

// helperEnv names the helper that the test binary, started again as a
// child, runs instead of the tests.
const helperEnv = "CONTROL_TEST_HELPER"

// helpers are the children's mains, registered by the tests' init.
var helpers = map[string]func(){}

func TestMain(m *testing.M) {
	if name := os.Getenv(helperEnv); name != "" {
		fn, ok := helpers[name]
		if !ok {
			fmt.Fprintf(os.Stderr, "no helper %q\n", name)
			os.Exit(2)
		}
		fn()
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}
