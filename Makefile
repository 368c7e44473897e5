# The two commands at the top of README.md:
#   make run   builds changecast and serves the demo on the embedded PostgreSQL
#   make test  runs every test, with the race detector
GO        ?= go
BIN       ?= bin/changecast
FUZZTIME  ?= 60s
BRIEFFUZZ ?= 4s
PKGS      := ./...
# Parsers of untrusted input and their fuzz targets (package:target).
FUZZ_TARGETS := ./wsapi:FuzzParseFilter ./wsapi:FuzzParseEnvelope ./wsapi:FuzzVerifyToken ./watcher:FuzzDecodeValue ./sanitize:FuzzStripJSON ./wsapi/client:FuzzParseFrame ./config:FuzzParse ./watcher:FuzzDecodeArray ./watcher:FuzzRowMessage ./entities:FuzzParseRow ./internal/jsonenc:FuzzAppendString ./internal/jsonenc:FuzzValid ./natsjournal:FuzzDecodeChange ./wsapi:FuzzSnapshotTokens

.PHONY: run test build vet fmt-check fuzz fuzz-brief postgres chromium clean bench bench-quick bench-harness

# The embedded default with the demo workload, so the printed dashboard
# URL shows rows and live changes at once ("changecast serve" alone serves
# without writing anything).
run: build postgres
	./$(BIN) demo

build:
	$(GO) build -o $(BIN) ./cmd/changecast

postgres:
	@.ci/ensure-postgres

# The dashboard's browser test drives headless Chromium.
chromium:
	@.ci/ensure-chromium

test: postgres chromium vet fmt-check
	$(GO) test -race -count=1 -timeout 20m $(PKGS)
	# Allocation counts are inflated by the race detector, so those tests
	# skip under -race; run them once without it.
	$(GO) test -count=1 -run 'Alloc' ./sanitize ./watcher ./entities ./wsapi
	@$(MAKE) --no-print-directory fuzz-brief

vet:
	$(GO) vet $(PKGS)

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

# Each fuzz target for a few seconds beyond its committed seed corpus (the
# seeds themselves run in every go test); part of make test.
fuzz-brief:
	@$(MAKE) --no-print-directory fuzz FUZZTIME=$(BRIEFFUZZ)

# Longer fuzzing of the parsers that take untrusted input.
fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		GO=$(GO) bash .ci/fuzz-one $${t%%:*} $${t##*:} $(FUZZTIME); \
	done

# Benchmarks (docs/benchmarks.md); not part of make test. changecast-bench
# starts its own PostgreSQL and runs a freshly built changecast against it,
# printing every figure next to its target; then the hot paths run as go
# test benchmarks. BENCH_FLAGS adds harness flags, e.g.
#   make bench BENCH_FLAGS='--out /tmp/results.md --server-profile /tmp/prof'
BENCH_FLAGS ?=
BENCH_PKGS  := ./watcher ./sanitize ./wire ./wsapi
# In-process load benchmarks (wsapi), run with a fixed count: their cost
# per operation is a connection or a 1,000-way fan-out.
LOAD_BENCH  := Hub_1000Connections|Server_IdleConnections
# The dashboard in headless Chromium at 1,000 changes/s: one run (6 s of
# load) per iteration; it reports the median of its runs with min and max.
DASH_BENCH  := Dashboard_1000PerSecond

bench: postgres chromium
	@$(MAKE) --no-print-directory bench-harness BENCH_MODE=
	@echo; echo "== 5. Hot paths (go test -bench -benchmem; no targets: time and allocations per operation) =="
	$(GO) test -run '^$$' -bench . -skip '$(LOAD_BENCH)' -benchmem $(BENCH_PKGS)
	@echo; echo "== In-process load: 1,000 connections with mixed filters (issue 4), and memory per idle connection =="
	$(GO) test -run '^$$' -bench 'Hub_1000Connections' -benchtime 5000x -benchmem ./wsapi
	$(GO) test -run '^$$' -bench 'Server_IdleConnections' -benchtime 2000x -benchmem ./wsapi
	@echo; echo "== The dashboard at 1,000 changes/s (headless Chromium; 3 runs: median, -min, -max) =="
	$(GO) test -run '^$$' -bench '$(DASH_BENCH)' -benchtime 3x ./cmd/changecast

# The same in under two minutes: small scenarios, one run each, short
# benchmark times.
bench-quick: postgres chromium
	@$(MAKE) --no-print-directory bench-harness BENCH_MODE=--quick
	@echo; echo "== 5. Hot paths (go test -bench -benchmem, short; no targets) =="
	$(GO) test -run '^$$' -bench . -skip '$(LOAD_BENCH)' -benchtime 50ms -benchmem $(BENCH_PKGS)
	$(GO) test -run '^$$' -bench 'Hub_1000Connections' -benchtime 500x -benchmem ./wsapi
	$(GO) test -run '^$$' -bench 'Server_IdleConnections' -benchtime 500x -benchmem ./wsapi
	$(GO) test -run '^$$' -bench '$(DASH_BENCH)' -benchtime 1x ./cmd/changecast

# Builds changecast, the harness and a nats-server (the version go.mod
# names, for the jetstream scenario) into a temporary directory, removed
# afterwards (also on Ctrl-C; the harness stops its own processes).
bench-harness:
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; trap 'exit 130' INT TERM; \
	$(GO) build -o "$$tmp/changecast" ./cmd/changecast; \
	$(GO) build -o "$$tmp/changecast-bench" ./cmd/changecast-bench; \
	$(GO) build -o "$$tmp/nats-server" github.com/nats-io/nats-server/v2; \
	"$$tmp/changecast-bench" --changecast "$$tmp/changecast" --nats-server "$$tmp/nats-server" $(BENCH_MODE) $(BENCH_FLAGS)

clean:
	rm -rf bin
