//go:build !unix || aix

package sockfd_test

import (
	"errors"
	"testing"

	"github.com/forkline/forkline/internal/sockfd"
)

func TestDupUnsupported(t *testing.T) {
	f, err := sockfd.Dup(nil)
	if !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("Dup = %v, %v; want errors.ErrUnsupported", f, err)
	}
}
