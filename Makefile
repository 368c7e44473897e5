# The two commands at the top of README.md:
#   make run   builds changecast and serves on the embedded PostgreSQL
#   make test  runs every test, with the race detector
GO        ?= go
BIN       ?= bin/changecast
FUZZTIME  ?= 10s
PKGS      := ./...

.PHONY: run test build vet fmt-check fuzz postgres clean

run: build postgres
	./$(BIN) serve

build:
	$(GO) build -o $(BIN) ./cmd/changecast

postgres:
	@.ci/ensure-postgres

test: postgres vet fmt-check
	$(GO) test -race -count=1 -timeout 20m $(PKGS)

vet:
	$(GO) vet $(PKGS)

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

# Longer fuzzing of the parsers that take untrusted input (not part of test).
fuzz:
	$(GO) test ./wsapi -run '^$$' -fuzz FuzzParseFilter -fuzztime $(FUZZTIME)
	$(GO) test ./watcher -run '^$$' -fuzz FuzzDecodeValue -fuzztime $(FUZZTIME)

clean:
	rm -rf bin
