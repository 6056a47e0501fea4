//go:build unix

package prefork

import (
	"testing"
	"time"
)

// The respawn delays: at once, then 100 ms growing by half each time, capped
// at 30 s.
func TestBackoff(t *testing.T) {
	for _, tc := range []struct {
		n    int
		want time.Duration
	}{
		{1, 0},
		{2, 100 * time.Millisecond},
		{3, 150 * time.Millisecond},
		{4, 225 * time.Millisecond},
		{5, 337500 * time.Microsecond},
		{17, 30 * time.Second}, // 100 ms x 1.5^15 = 43.8 s: capped
		{1000, 30 * time.Second},
	} {
		if got := backoff(tc.n); got != tc.want {
			t.Errorf("backoff(%d) = %v, want %v", tc.n, got, tc.want)
		}
	}
	for n := 2; n < 40; n++ {
		if backoff(n) < backoff(n-1) {
			t.Errorf("backoff(%d) = %v < backoff(%d) = %v", n, backoff(n), n-1, backoff(n-1))
		}
	}
}
