# forkline: build, test, lint, cross-compile, fuzz, benchmarks.
GO ?= go
OSES := darwin freebsd openbsd windows

.PHONY: all build test race lint cross fuzz bench bench-ipc bench-reload bench-upgrade bench-steer bench-run soak clean

all: lint test

build:
	$(GO) build ./...
	mkdir -p bin && $(GO) build -o bin/hello ./examples/hello

# The README's test command; .ci/run runs the same.
test:
	$(GO) test -race ./...

race: test

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	cd examples/fasthttp && $(GO) vet ./...
	cd examples/grpc && $(GO) vet ./...
	cd metrics && $(GO) vet ./...
	cd examples/metrics && $(GO) vet ./...
	cd cmd/forkline && $(GO) vet ./...
	cd bench && $(GO) vet ./...
	@if $(GO) run honnef.co/go/tools/cmd/staticcheck@latest -version >/dev/null 2>&1; then \
		$(GO) run honnef.co/go/tools/cmd/staticcheck@latest ./...; \
	else echo "staticcheck not available from the module proxy; skipped"; fi

# Every package compiles and vets on every platform we name.
cross:
	@for os in $(OSES); do echo "GOOS=$$os go vet ./..."; GOOS=$$os $(GO) vet ./... || exit 1; done

fuzz:
	$(GO) test -run '^$$' -fuzz=FuzzDecode -fuzztime=60s ./internal/wire/

bench:
	cd bench && $(GO) run ./http

bench-ipc:
	cd bench && $(GO) run ./ipc

bench-reload:
	cd bench && $(GO) run ./reload

bench-upgrade:
	cd bench && $(GO) run ./upgrade

bench-steer:
	cd bench && $(GO) run ./steer

bench-run:
	cd bench && $(GO) run ./run

# Chaos soak, 60 s (not part of make test): make soak SOAKFLAGS='-duration 15s -seed N'
soak:
	cd bench && $(GO) run ./soak $(SOAKFLAGS)

clean:
	rm -rf bin
