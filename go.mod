module github.com/forkline/forkline

go 1.26.0

require (
	github.com/libp2p/go-reuseport v0.4.0
	github.com/oklog/run v1.2.0
	go.uber.org/goleak v1.3.0
	golang.org/x/sys v0.50.0
)
