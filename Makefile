# tidestream — build, test and demo. `make test` is what CI runs (.ci/run).
SHELL := /bin/bash
export GONOSUMDB := github.com/pingcap,github.com/tikv
export GOFLAGS := -buildvcs=false

MODULES := proto puller sorter encoder producer coordinator services e2e
PKGS := $(addsuffix /...,$(addprefix ./,$(MODULES)))
BIN := $(CURDIR)/bin
PROTO_FILES := $(wildcard proto/tidestream/v1/*.proto)

.PHONY: all build test deps proto proto-check vet unit e2e demo fmt clean

all: build

build: $(BIN)/cdc

$(BIN)/cdc: FORCE
	go build -o $(BIN)/cdc ./services/cmd/cdc

FORCE:

deps:
	@./scripts/deps.sh

# Plugins are pinned by proto/go.mod's tool directives; protoc is Debian's.
$(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-grpc: proto/go.mod
	cd proto && go build -o $(BIN)/ google.golang.org/protobuf/cmd/protoc-gen-go google.golang.org/grpc/cmd/protoc-gen-go-grpc

define protoc_gen
PATH=$(BIN):$$PATH protoc -I proto --go_out=$(1) --go_opt=paths=source_relative \
	--go-grpc_out=$(1) --go-grpc_opt=paths=source_relative $(PROTO_FILES)
endef

proto: deps $(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-grpc
	$(call protoc_gen,proto)

# Regenerates into a scratch dir and compares with what is committed.
proto-check: deps $(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-grpc
	@tmp=$$(mktemp -d) && trap 'rm -rf $$tmp' EXIT && \
	$(call protoc_gen,$$tmp) && \
	for f in $$(cd $$tmp && find . -name '*.go'); do \
		diff -u "proto/$$f" "$$tmp/$$f" || { echo "proto: generated code is stale; run make proto"; exit 1; }; \
	done && echo "proto: generated code is current"

fmt:
	gofmt -w $(MODULES)

vet:
	@out=$$(gofmt -l $(MODULES)); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	go vet $(PKGS)

# Unit and in-process tests, with the race detector on everything: most
# packages start goroutines, and the race build is cheap next to the tests.
unit:
	go test -race -count=1 $(filter-out ./e2e/...,$(PKGS))

# End-to-end: real processes (cdc, etcd) on loopback ports chosen at run time.
e2e: build
	CDC_BIN=$(BIN)/cdc go test -count=1 -timeout 20m ./e2e/...

test: deps proto-check vet unit e2e

# Starts `cdc server` on embedded defaults and creates the seed's changefeed.
demo: build
	./scripts/demo.sh

clean:
	rm -rf $(BIN)
