# Tether's build and test entry points. `make test` is the one command CI runs.
SHELL := /bin/bash
GO ?= go
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: test deps lint unit run bench bench-e2e bench-go fuzz web

## test: install what the tests need, then vet, staticcheck and every test with -race
test: deps lint unit

## deps: install the test peers when missing (Debian's mosquitto clients and chromium, web/node_modules)
deps:
	@./scripts/deps.sh

## web: rebuild the browser client and demo page into web/dist (committed: go build embeds it, no npm needed)
web:
	@cd web && { [ -d node_modules ] || npm ci --no-audit --no-fund --loglevel=error; } && node build.mjs

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

unit:
	$(GO) test -race -count=1 -timeout 12m ./...

## run: the broker with embedded defaults
run:
	$(GO) run ./cmd/broker

## fuzz: a short run of every fuzz target (FUZZTIME each; go test fuzzes one target of one package at a time)
FUZZTIME ?= 10s
FUZZ_TARGETS := ./internal/jsonobj:FuzzMembers ./internal/jsonobj:FuzzAppendString ./sessions:FuzzSessionEncoding ./sessions:FuzzEventEncoding ./internal/mqttread:FuzzPacket ./auth:FuzzParseToken ./snapshot:FuzzOpen ./queues:FuzzDecodeMessage ./queues:FuzzDecodeRows ./wire:FuzzDecodeRequest ./wire:FuzzDecodeNotification ./wire:FuzzParseSessionTopic ./snapshot:FuzzParseKeys ./cmd/broker:FuzzPolicyRules ./cmd/broker:FuzzQueueRules ./broker:FuzzCanonicalOrigin ./cmd/device-sim:FuzzScenarioFile
fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		echo "fuzz $${t#*:} ($${t%%:*}, $(FUZZTIME))"; \
		$(GO) test "$${t%%:*}" -run '^$$' -fuzz "^$${t#*:}$$" -fuzztime $(FUZZTIME); \
	done

## bench: the end-to-end comparisons (written into docs/benchmarks.md), then the Go benchmarks
bench: bench-e2e bench-go

## bench-e2e: device-sim's benchmarks: durable Tether vs mosquitto vs bare mochi, durable calls, memory per idle
## session, connect+begin rate; each replaces its section of docs/benchmarks.md
bench-e2e: deps
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	$(GO) build -o "$$tmp/broker" ./cmd/broker && $(GO) build -o "$$tmp/device-sim" ./cmd/device-sim && \
	"$$tmp/device-sim" bench all --broker-bin "$$tmp/broker" --doc docs/benchmarks.md

## bench-go: the Go benchmarks
bench-go:
	$(GO) test -run '^$$' -bench . -benchmem ./...
