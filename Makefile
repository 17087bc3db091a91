# Tether's build and test entry points. `make test` is the one command CI runs.
SHELL := /bin/bash
GO ?= go
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: test deps lint unit run bench fuzz

## test: install what the tests need, then vet, staticcheck and every test with -race
test: deps lint unit

## deps: install the test peers (Debian's mosquitto clients) when missing
deps:
	@./scripts/deps.sh

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

unit:
	$(GO) test -race -count=1 -timeout 12m ./...

## run: the broker with embedded defaults
run:
	$(GO) run ./cmd/broker

## fuzz: a short run of every fuzz target
fuzz:
	$(GO) test ./auth -run '^$$' -fuzz FuzzParseToken -fuzztime 30s

## bench: the Go benchmarks
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...
