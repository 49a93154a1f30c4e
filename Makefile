# Every target describes itself with "##"; `make help` lists them.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

GO        ?= go
BIN       ?= bin
PKGS      ?= ./...
FUZZTIME  ?= 10s
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)

.PHONY: help
help: ## List the targets.
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_\/-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## Build every command into ./bin.
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/...

.PHONY: test
test: ## Run every test with the race detector (starts its own redis-server and NATS).
	$(GO) test -race -count=1 $(PKGS)

.PHONY: test/race
test/race: ## Run every test three times in shuffled order with the race detector, to shake out flakes.
	$(GO) test -race -count=3 -shuffle=on $(PKGS)

.PHONY: fuzz
fuzz: ## Run each fuzz target for FUZZTIME (default 10s) beyond its seed corpus.
	@for pkg in $$($(GO) list $(PKGS)); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "fuzz $$pkg $$f"; \
	    $(GO) test -run '^$$' -fuzz "^$$f\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 10x $$pkg; \
	  done; \
	done

.PHONY: lint
lint: ## go vet, golangci-lint, and govulncheck when its database is reachable.
	$(GO) vet $(PKGS)
	$(GO) tool golangci-lint run $(PKGS)
	@if curl -fsS -m 5 -o /dev/null https://vuln.go.dev/index/db.json.gz 2>/dev/null; then \
	  $(GO) tool govulncheck $(PKGS); \
	else \
	  echo "govulncheck: SKIPPED, vulnerability database unreachable (set GOVULNDB to a local copy)"; \
	  if [ -n "$${GOVULNDB:-}" ]; then $(GO) tool govulncheck -db "$$GOVULNDB" $(PKGS); fi; \
	fi

.PHONY: fmt
fmt: ## Format the code (gofmt and goimports through golangci-lint).
	$(GO) tool golangci-lint fmt $(PKGS)

.PHONY: tidy
tidy: ## Tidy go.mod and go.sum.
	$(GO) mod tidy
