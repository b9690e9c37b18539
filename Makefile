# etcdkit: make run (every example on an embedded etcd), make test (what CI runs).
GO       ?= go
BIN      := $(CURDIR)/bin
# Process-level tests run this etcd binary, built from etcdmain at the version go.mod requires.
export ETCDKIT_ETCD_BIN := $(BIN)/etcd

BENCHTIME ?= 2s
BENCH     ?= .

.PHONY: all build run test lint vet fmt-check bench etcd clean

# Parts kept in mk/: each may add prerequisites of make test to TEST_DEPS.
TEST_DEPS :=
-include mk/*.mk

all: build

build:
	$(GO) build -o $(BIN)/examples ./examples
	$(GO) build -o $(BIN)/etcdkit ./cmd/etcdkit

# The go command's cache makes these cheap when nothing changed.
etcd:
	$(GO) build -o $(BIN)/etcd ./test/etcdtest/cmd/etcd

run: build
	$(BIN)/examples --example=all

lint: fmt-check vet

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

# The multi-process sharding suite asserts failover within the TTL and a second: it runs on
# its own, after the others, so that it does not share the 2 cores with another package.
SOLO := ./test/sharding

test: lint etcd $(TEST_DEPS)
	$(GO) test -race -count=1 -timeout 25m $$($(GO) list ./... | grep -v '/test/sharding$$')
	$(GO) test -race -count=1 -timeout 10m -p 1 $(SOLO)

bench: etcd
	$(GO) test -run '^$$' -bench '$(BENCH)' -benchtime $(BENCHTIME) -benchmem -timeout 30m ./test/bench/ ./test/etcdtest/

clean:
	rm -rf $(BIN)
