//go:build unix

package wire

import (
	"context"
	"slices"
	"testing"
	"time"
)

// BenchmarkOneWay64 streams frames with 64-byte payloads from one end of a
// socketpair to a reader goroutine on the other end.
func BenchmarkOneWay64(b *testing.B) {
	a, z := conns(b, Options{})
	f := Frame{Type: TypeUser, From: 1, To: Parent, Payload: make([]byte, 64)}
	done := make(chan error, 1)
	b.ReportAllocs()
	b.SetBytes(int64(HeaderLen + len(f.Payload)))
	b.ResetTimer()
	go func() {
		for range b.N {
			if _, err := z.Recv(); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	ctx := context.Background()
	for i := range b.N {
		f.ID = uint64(i)
		if err := a.SendWait(ctx, &f); err != nil {
			b.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

// BenchmarkRoundTrip sends a request, has the peer answer it, and receives
// the reply; it reports the median and 99th percentile round trip.
func BenchmarkRoundTrip(b *testing.B) { benchmarkRoundTrip(b, (*Conn).Send) }

// BenchmarkRoundTripDirect writes requests and replies with SendDirect.
func BenchmarkRoundTripDirect(b *testing.B) { benchmarkRoundTrip(b, (*Conn).SendDirect) }

func benchmarkRoundTrip(b *testing.B, send func(*Conn, *Frame) error) {
	a, z := conns(b, Options{})
	done := make(chan error, 1)
	go func() {
		for {
			f, err := z.Recv()
			if err != nil {
				done <- nil // a closed: the benchmark is over
				return
			}
			f.Type, f.From, f.To = TypeReply, f.To, f.From
			if err := send(z, &f); err != nil {
				done <- err
				return
			}
		}
	}()
	req := Frame{Type: TypeRequest, From: 1, To: Parent, Payload: make([]byte, 64)}
	rtt := make([]time.Duration, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		req.ID = uint64(i)
		start := time.Now()
		if err := send(a, &req); err != nil {
			b.Fatal(err)
		}
		f, err := a.Recv()
		if err != nil {
			b.Fatal(err)
		}
		rtt[i] = time.Since(start)
		if f.ID != req.ID {
			b.Fatalf("reply %d to request %d", f.ID, req.ID)
		}
	}
	b.StopTimer()
	a.Close()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	slices.Sort(rtt)
	b.ReportMetric(float64(rtt[len(rtt)/2].Nanoseconds()), "p50-ns")
	b.ReportMetric(float64(rtt[len(rtt)*99/100].Nanoseconds()), "p99-ns")
	b.ReportMetric(float64(2*b.N)/b.Elapsed().Seconds(), "msgs/s")
}
