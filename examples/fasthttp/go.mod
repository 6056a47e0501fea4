module github.com/forkline/forkline/examples/fasthttp

go 1.26

replace github.com/forkline/forkline => ../..
