# The two commands at the top of README.md:
#   make run   builds changecast and serves on the embedded PostgreSQL
#   make test  runs every test, with the race detector
GO        ?= go
BIN       ?= bin/changecast
FUZZTIME  ?= 60s
BRIEFFUZZ ?= 4s
PKGS      := ./...
# Parsers of untrusted input and their fuzz targets (package:target).
FUZZ_TARGETS := ./wsapi:FuzzParseFilter ./wsapi:FuzzParseEnvelope ./watcher:FuzzDecodeValue ./sanitize:FuzzStripJSON

.PHONY: run test build vet fmt-check fuzz fuzz-brief postgres clean

run: build postgres
	./$(BIN) serve

build:
	$(GO) build -o $(BIN) ./cmd/changecast

postgres:
	@.ci/ensure-postgres

test: postgres vet fmt-check
	$(GO) test -race -count=1 -timeout 20m $(PKGS)
	# Allocation counts are inflated by the race detector, so those tests
	# skip under -race; run them once without it.
	$(GO) test -count=1 -run 'Alloc' ./sanitize
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
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "fuzz $$name ($$pkg) for $(FUZZTIME)"; \
		$(GO) test $$pkg -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 3s; \
	done

clean:
	rm -rf bin
