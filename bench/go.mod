module github.com/forkline/forkline/bench

go 1.26.0

replace github.com/forkline/forkline => ../

require (
	github.com/forkline/forkline v0.0.0-00010101000000-000000000000
	github.com/valyala/fasthttp v1.78.0
)

require (
	github.com/klauspost/compress v1.20.3 // indirect
	github.com/libp2p/go-reuseport v0.4.0 // indirect
	github.com/molecule-man/go-brrr v1.3.1 // indirect
	github.com/oklog/run v1.2.0 // indirect
	github.com/valyala/bytebufferpool v1.0.0 // indirect
	golang.org/x/sys v0.50.0 // indirect
)
