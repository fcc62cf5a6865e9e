# Warder. `make run` starts a dev server; `make test` runs the whole suite,
# starting (and, as root, installing) the services it needs.
GO        ?= go
BIN       := bin/warder
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X github.com/warderhq/warder/internal/cli.Version=$(VERSION)
STATICCHECK_VERSION := v0.8.2
export CGO_ENABLED := 0

.PHONY: all build run test unit lint services fuzz bench clean

all: build

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/warder

## run: build and start `warder dev` (SQLite, auto-initialised and unsealed) in ./.warder-dev
run: build
	./$(BIN) dev

## test: lint, then every test against real PostgreSQL
test: services lint unit

services:
	@scripts/services.sh

# The race detector needs cgo; the binary itself is built without it
# (the end-to-end tests build it with CGO_ENABLED=0).
unit:
	CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 30m ./...

lint:
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	@scripts/staticcheck.sh $(STATICCHECK_VERSION)

## fuzz: run every fuzz target briefly (FUZZTIME=1m for longer)
FUZZTIME ?= 20s
fuzz:
	@scripts/fuzz.sh $(FUZZTIME)

## bench: the benchmarks quoted in docs/benchmarks.md
bench: services
	@scripts/services.sh bench
	$(GO) test -run '^$$' -bench . -benchtime 3s ./internal/audit/ ./internal/barrier/

clean:
	rm -rf bin
