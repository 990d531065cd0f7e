# tidestream — build, test and demo. `make test` is what CI runs (.ci/run).
SHELL := /bin/bash
export GONOSUMDB := github.com/pingcap,github.com/tikv
export GOFLAGS := -buildvcs=false

MODULES := proto puller sorter encoder producer coordinator services e2e
PKGS := $(addsuffix /...,$(addprefix ./,$(MODULES)))
BIN := $(CURDIR)/bin
PROTO_FILES := $(wildcard proto/tidestream/v1/*.proto)

.PHONY: all build test deps proto proto-check vet unit e2e demo fmt clean \
	playground playground-build playground-vet playground-test sorter-memory bench scale soak devstack

# deploy/playground is its own module with TiDB's dependency set, outside go.work.
PG_DIR := deploy/playground
PG_GO := cd $(PG_DIR) && GOWORK=off
GO_TPC_VERSION := v1.0.12

all: build

build: $(BIN)/cdc

$(BIN)/cdc: FORCE
	go build -o $(BIN)/cdc ./services/cmd/cdc

$(BIN)/devstack: FORCE
	go build -o $(BIN)/devstack ./services/cmd/devstack

$(BIN)/demo: FORCE
	go build -o $(BIN)/demo ./services/cmd/demo

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
	gofmt -w $(MODULES) $(PG_DIR)

vet:
	@out=$$(gofmt -l $(MODULES)); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	go vet $(PKGS)

# Unit and in-process tests, with the race detector on everything: most
# packages start goroutines, and the race build is cheap next to the tests.
# The puller's integration tests run against the playground binary.
unit: playground-build
	PLAYGROUND_BIN=$(BIN)/playground go test -race -count=1 $(filter-out ./e2e/...,$(PKGS))

# End-to-end: real processes (cdc, etcd, the playground, go-tpc) on loopback
# ports chosen at run time.
# The figures the tests measure (lag during TPC-C, recovery after each
# fault) are printed after them: go test without -v shows a passing test's
# log to nobody.
E2E_FIGURES := $(CURDIR)/.e2e-figures
e2e: build playground-build $(BIN)/go-tpc $(BIN)/devstack $(BIN)/demo
	@rm -f $(E2E_FIGURES)
	@status=0; CDC_BIN=$(BIN)/cdc PLAYGROUND_BIN=$(BIN)/playground GO_TPC=$(BIN)/go-tpc DEMO_BIN=$(BIN)/demo \
		TIDESTREAM_FIGURES=$(E2E_FIGURES) go test -count=1 -timeout 25m ./e2e/... || status=$$?; \
	echo "e2e figures:"; cat $(E2E_FIGURES) 2>/dev/null; rm -f $(E2E_FIGURES); exit $$status

test: deps proto-check vet playground-vet unit sorter-memory e2e playground-test

# Sorter memory acceptance (issue 5): 2 GiB through a 64 MiB quota with the
# consumer paused for the first half; RSS is measured and printed. Never under
# -race, which inflates memory.
sorter-memory:
	SORTER_MEMORY_TEST=1 go test -count=1 -run TestMemoryStaysUnderQuota -v ./sorter/service/

# Benchmarks print their figures (rows/s, bytes and allocations per op, and
# ours next to the raw library's where one exists); nothing here asserts a
# speed. Not part of `make test`.
bench: playground-build
	PLAYGROUND_BIN=$(BIN)/playground go test -run '^$$' -bench . -benchmem -count=1 ./encoder/... ./sorter/engine/ ./puller/... ./producer/... ./proto/contract/local/
	$(PG_GO) PLAYGROUND_BIN=$(BIN)/playground go test -run '^$$' -bench Synthetic -benchmem -count=1 .

# Scale check (issue 14): one changefeed over SCALE_TABLES synthetic tables
# (each count in turn) on one `cdc server` with its embedded etcd. Prints the
# time to place every table and to the first checkpoint advance, the etcd
# size and keys, the server's CPU (with a profile split by stage) and
# checkpoint lag at steady state, and its memory. TIDESTREAM_SCALE_RATE,
# _WARMUP, _WINDOW, _TIMEOUT, _SESSION_TTL and _OUT, set in the environment,
# tune it (e2e/scale_tables_test.go). 1,000 tables take about 3 minutes;
# 10,000 take 5 to create and then up to _TIMEOUT (default 20m) for the
# changefeed to get going. A new changefeed registers two schemas per table
# before its checkpoint can pass them all. Not part of `make test`.
SCALE_TABLES ?= 1000,10000
scale: build playground-build
	CDC_BIN=$(BIN)/cdc PLAYGROUND_BIN=$(BIN)/playground TIDESTREAM_SCALE_TABLES=$(SCALE_TABLES) \
		go test -count=1 -timeout 120m -run '^TestScaleManyTables$$' -v ./e2e/

# Reliability soaks (specs/performance-and-reliability.md §5), one `cdc
# server` with a 512 MiB memory budget (--puller-memory-quota 128 MiB,
# --sorter-memory-quota 256 MiB, GOMEMLIMIT 512 MiB): R16, one transaction
# of 1,000,000 rows (~1 GB), and R5, Kafka refusing connections for 20 s
# every 2 min for 10 min under a write load. Each prints the server's peak
# RSS, checkpoint lag and timings, and ends with a clean `cdc diff`.
# TIDESTREAM_SOAK_ROWS, _ROW_BYTES, _TXN_TIMEOUT, _OUTAGES, _PERIOD, _OUTAGE,
# _LAG, _QUOTA and _RSS_LIMIT, set in the environment, tune them
# (e2e/soak_test.go); SOAK_RUN picks one, e.g. a quick R5:
# SOAK_RUN=TestSoakKafkaOutages TIDESTREAM_SOAK_OUTAGES=2 TIDESTREAM_SOAK_PERIOD=1m.
# R5 takes about 12 minutes, R16 up to its 15-minute timeout after the
# commit. Not part of `make test`.
SOAK_RUN ?= ^TestSoak
soak: build playground-build
	CDC_BIN=$(BIN)/cdc PLAYGROUND_BIN=$(BIN)/playground TIDESTREAM_SOAK=1 \
		go test -count=1 -timeout 120m -run '$(SOAK_RUN)' -v ./e2e/

# The playground binary. A cold build compiles TiDB (about 5 minutes on 2 cores);
# later builds come from the Go build cache.
playground-build:
	$(PG_GO) go build -o $(BIN)/playground .

# Builds and starts a playground on the default ports (4000 SQL, 10080 status,
# 2379 PD, 20160 TiKV) with its data in ./playground-data. ARGS adds flags.
playground: playground-build
	$(BIN)/playground --data-dir playground-data $(ARGS)

# Builds and starts devstack: kfake on 127.0.0.1:9092 (auto-created topics get
# 3 partitions) and the Schema Registry on 127.0.0.1:8081, until Ctrl-C. It
# prints `kafka <addrs>` and `registry <url>` once listening. ARGS adds flags
# (later ones win), e.g. ARGS="--sasl-user u:p --tls-cert c.pem --tls-key k.pem".
devstack: $(BIN)/devstack
	$(BIN)/devstack --kafka-port 9092 --registry-port 8081 $(ARGS)

$(BIN)/go-tpc:
	$(PG_GO) GOBIN=$(BIN) go install github.com/pingcap/go-tpc/cmd/go-tpc@$(GO_TPC_VERSION)

playground-vet:
	@out=$$(gofmt -l $(PG_DIR)); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(PG_GO) go vet ./...

# The playground's own tests: its concurrent packages in process with the race
# detector, then TiDB in process and the acceptance tests that run the binary
# and go-tpc as processes. The tidb package is not raced: the pd client version
# TiDB pins has data races of its own.
PG_RACE_PKGS := ./cdcemu/... ./checker/... ./kvserver/... ./pdserver/... ./store/... ./internal/...
playground-test: playground-build $(BIN)/go-tpc
	$(PG_GO) go test -race -count=1 -timeout 20m $(PG_RACE_PKGS)
	$(PG_GO) PLAYGROUND_BIN=$(BIN)/playground GO_TPC=$(BIN)/go-tpc go test -count=1 -timeout 30m . ./tidb/... ./synth/... ./internal/pgtest/

# The seed guide end to end (services/demo): devstack, the playground and
# `cdc server`, the guide's changefeed, go-tpc tpcc prepare and run, the
# topics and the diff's verdict; everything stopped on exit or Ctrl-C.
# ARGS adds flags, e.g. ARGS="--warehouses 2 --run-time 5m --keep".
demo: build playground-build $(BIN)/devstack $(BIN)/go-tpc $(BIN)/demo
	$(BIN)/demo $(ARGS)

clean:
	rm -rf $(BIN)
