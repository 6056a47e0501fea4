package prefork

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"testing"
)

// BenchmarkRequestPath serves b.N requests on one keep-alive connection
// through Run's HTTP path (serveHTTP) and through a plain http.Server, in
// this process: the difference is what forkline adds to a request
// (go test -run '^$' -bench RequestPath -count 10 ./prefork | benchstat).
func BenchmarkRequestPath(b *testing.B) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "Hello\n") })
	for _, tc := range []struct {
		name  string
		serve func(ctx context.Context, ln net.Listener) error
	}{
		{"plain", func(ctx context.Context, ln net.Listener) error {
			srv := &http.Server{Handler: h}
			context.AfterFunc(ctx, func() { srv.Close() })
			return srv.Serve(ln)
		}},
		{"forkline", func(ctx context.Context, ln net.Listener) error {
			return ServeHTTP(ctx, ln, &http.Server{Handler: h})
		}},
	} {
		b.Run(tc.name, func(b *testing.B) { benchServe(b, tc.serve) })
	}
}

func benchServe(b *testing.B, serve func(ctx context.Context, ln net.Listener) error) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, ln) }()
	c, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	br := bufio.NewReader(c)
	req := []byte("GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := c.Write(req); err != nil {
			b.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	b.StopTimer()
	c.Close()
	cancel()
	ln.Close()
	<-done // the server's end; its error is the closed listener's
}
