package prefork_test

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

// A feed is what a cluster reported so far, in order: the typed
// observations a helper parent writes on its pipe, the lines of its stderr,
// an in-process parent's events and messages. One goroutine adds to it; a
// test waits on it with a reader. Nothing is dropped and nothing blocks the
// cluster: a feed grows as needed.
type feed[T any] struct {
	mu    sync.Mutex
	items []T
	ended bool          // the source is done (EOF, the parent returned)
	grew  chan struct{} // closed, and replaced, whenever items or ended change
}

func newFeed[T any]() *feed[T] { return &feed[T]{grew: make(chan struct{})} }

func (f *feed[T]) add(v T) {
	f.mu.Lock()
	f.items = append(f.items, v)
	close(f.grew)
	f.grew = make(chan struct{})
	f.mu.Unlock()
}

// end marks the feed complete: waits past its last item fail at once.
func (f *feed[T]) end() {
	f.mu.Lock()
	if !f.ended {
		f.ended = true
		close(f.grew)
		f.grew = make(chan struct{})
	}
	f.mu.Unlock()
}

// since returns the items from index i on, whether the feed has ended,
// and a channel closed when either changes.
func (f *feed[T]) since(i int) ([]T, bool, <-chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.items[min(i, len(f.items)):], f.ended, f.grew
}

// all returns every item so far.
func (f *feed[T]) all() []T {
	items, _, _ := f.since(0)
	return items
}

// waitEnd waits until the feed has ended, or reports that it did not
// within timeout (a watchdog).
func (f *feed[T]) waitEnd(timeout time.Duration) error {
	watchdog := time.NewTimer(timeout)
	defer watchdog.Stop()
	for i := 0; ; {
		items, ended, grew := f.since(i)
		if ended {
			return nil
		}
		i += len(items)
		select {
		case <-grew:
		case <-watchdog.C:
			return fmt.Errorf("not ended within %v", timeout)
		}
	}
}

// A reader goes through a feed in order: each wait takes the items up to
// the one it returns, so that a test sees every item once, in order.
type reader[T any] struct {
	f    *feed[T]
	next int
}

func (f *feed[T]) reader() *reader[T] { return &reader[T]{f: f} }

// await returns the next item that match accepts. The test fails when the
// feed ends first, or when none comes within timeout: a watchdog, not a
// wait. match sees every item on the way (it may count them).
func (r *reader[T]) await(t testing.TB, timeout time.Duration, what string, match func(T) bool) T {
	t.Helper()
	v, err := r.find(timeout, match)
	if err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
	return v
}

// find is await without the test: an error says why nothing matched.
func (r *reader[T]) find(timeout time.Duration, match func(T) bool) (T, error) {
	watchdog := time.NewTimer(timeout)
	defer watchdog.Stop()
	for {
		items, ended, grew := r.f.since(r.next)
		for _, v := range items {
			r.next++
			if match(v) {
				return v, nil
			}
		}
		if ended {
			var zero T
			return zero, fmt.Errorf("the feed ended (the cluster is gone)")
		}
		select {
		case <-grew:
		case <-watchdog.C:
			var zero T
			return zero, fmt.Errorf("nothing within %v", timeout)
		}
	}
}

// peek returns the next item without taking it, waiting for it as await
// does. ok is false when the feed ends first.
func (r *reader[T]) peek(t testing.TB, timeout time.Duration, what string) (v T, ok bool) {
	t.Helper()
	watchdog := time.NewTimer(timeout)
	defer watchdog.Stop()
	for {
		items, ended, grew := r.f.since(r.next)
		if len(items) > 0 {
			return items[0], true
		}
		if ended {
			return v, false
		}
		select {
		case <-grew:
		case <-watchdog.C:
			t.Fatalf("waiting for %s: nothing within %v", what, timeout)
		}
	}
}
