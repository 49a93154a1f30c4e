# Every target describes itself with "##"; `make help` lists them.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

GO        ?= go
BIN       ?= bin
PKGS      ?= ./...
FUZZTIME  ?= 20000x
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)

.PHONY: help
help: ## List the targets.
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_\/-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## Build every command into ./bin.
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/...

# The tests start their own redis-server; without it they fail rather than
# skip, so that a green run never hides tests that did not run.
# TESTENV_SKIP_MISSING=1 skips them instead, on purpose.
.PHONY: test/servers
test/servers:
	@if ! command -v redis-server >/dev/null 2>&1; then \
	  if [ "$${TESTENV_SKIP_MISSING:-}" = 1 ]; then \
	    echo "test: redis-server is not installed; TESTENV_SKIP_MISSING=1, so the tests that need it are SKIPPED"; \
	  else \
	    echo "test: redis-server is not installed; the tests need it. Install it (apt-get install redis-server)," >&2; \
	    echo "      or run TESTENV_SKIP_MISSING=1 make test to skip the tests that need it." >&2; \
	    exit 1; \
	  fi; \
	fi

.PHONY: test
test: test/servers ## Run every test with the race detector (starts its own redis-server and NATS).
	$(GO) test -race -count=1 $(PKGS)

.PHONY: test/race
test/race: test/servers ## Run every test three times in shuffled order with the race detector, to shake out flakes.
	$(GO) test -race -count=3 -shuffle=on $(PKGS)

# FUZZTIME is a count of inputs (Nx), not a duration: with a duration, Go
# 1.26's fuzzing coordinator can fail a clean run with "context deadline
# exceeded" as the time runs out (golang/go#75804, fixed in Go 1.27).
.PHONY: fuzz
fuzz: ## Run each fuzz target on FUZZTIME inputs (default 20000x) beyond its seed corpus.
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

# ---- container image and Kubernetes (Dockerfile, deploy/) ----
IMAGE  ?= orderworker:$(VERSION)
COMMIT ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)

.PHONY: image
image: ## Build the container image (docker build); without a running engine, build its static binaries into bin/image.
	@if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then \
	  echo "docker build -t $(IMAGE) ."; \
	  docker build --build-arg VERSION=$(VERSION) --build-arg COMMIT=$(COMMIT) --build-arg BORINGCRYPTO=$(BORINGCRYPTO) -t $(IMAGE) . ; \
	else \
	  echo "image: no container engine is running; running the image's build steps (deploy/image/build.sh) with go build into $(BIN)/image"; \
	  GO=$(GO) VERSION=$(VERSION) COMMIT=$(COMMIT) BORINGCRYPTO=$(BORINGCRYPTO) sh deploy/image/build.sh $(BIN)/image; \
	  ls -l $(BIN)/image; \
	fi

.PHONY: k8s-check
k8s-check: ## Render every deploy/k8s overlay; check it against the Kubernetes, KEDA and Prometheus schemas and the code.
	$(GO) test -count=1 -v ./deploy/k8s/ 2>&1 | grep -Ev '^(=== (RUN|PAUSE|CONT)|    --- PASS)'

# ---- demo and benchmark (cmd/demo, cmd/loadgen, bench/) ----
.PHONY: demo
demo: ## Run the whole product on this machine (embedded NATS, simulator with faults, worker, notifier) and print a summary.
	$(GO) run ./cmd/demo

.PHONY: bench
bench: ## Go benchmarks and the end-to-end load test; writes bench/results/latest.{json,md}, and the cluster run bench/results/cluster.{json,md} (about 6 minutes).
	$(GO) run ./bench

.PHONY: bench/latency
bench/latency: ## Only the runs of the adaptive concurrency limit (100 and 300 ms WeChat Pay) and of a shared merchant rate limit; updates those figures of bench/results/latest.{json,md}.
	$(GO) run ./bench -only-limits

.PHONY: bench/cluster
bench/cluster: ## Only the cluster run of the benchmark: 2 workers on one nats-server (R1), then on a 3-node cluster (R3); writes bench/results/cluster.{json,md}.
	$(GO) run ./bench -cluster-only

CHAOS_ORDERS       ?= 10000
CHAOS_SHORT_ORDERS ?= 2000

# The chaos suite runs nats-server built from the version go.mod requires
# (Debian's is too old for the worker).
.PHONY: $(BIN)/nats-server
$(BIN)/nats-server:
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -o $(BIN)/nats-server github.com/nats-io/nats-server/v2

.PHONY: chaos
chaos: $(BIN)/nats-server ## Chaos suite: real servers, 3 workers, notifier, 10,000 orders under kills, restarts, Redis loss, lost acks, clock skew and WeChat faults (SEED=n replays).
	$(GO) run ./cmd/chaos -nats-server $(BIN)/nats-server -orders $(CHAOS_ORDERS) -timeout 25m $(if $(SEED),-seed $(SEED))

.PHONY: chaos/short
chaos/short: $(BIN)/nats-server ## The chaos suite for CI: 2,000 orders, the same disruptions and faults, within about 6 minutes (SEED=n replays).
	$(GO) run ./cmd/chaos -nats-server $(BIN)/nats-server -orders $(CHAOS_SHORT_ORDERS) -publish-rate 50 -timeout 12m $(if $(SEED),-seed $(SEED))

CHAOS_CLUSTER_ORDERS       ?= 5000
CHAOS_CLUSTER_SHORT_ORDERS ?= 800

# The cluster runs: a 3-node JetStream cluster (R3) of real nats-server
# processes, and Redis as a primary, a replica and three Sentinels (or the
# JetStream KV backend); the disruptions are spread over the publishing
# time, so the publish rate is kept low enough for them to fit.
# The cluster runs keep the single-node suite's regime: the workers'
# IDEMPOTENCY_OUTCOME_TTL outlasts the publishing time, so late duplicates
# meet their record. Jobs of exactly MAX_JOB_BYTES are off: an R3 stream
# refuses them (its size limit counts the headers; docs/operations.md).
CHAOS_CLUSTER_FLAGS = -cluster -nats-server $(BIN)/nats-server -oversized -1 $(if $(SEED),-seed $(SEED))

.PHONY: chaos/cluster
chaos/cluster: $(BIN)/nats-server ## Chaos on a 3-node JetStream cluster + Redis Sentinel, then with the KV backend: 5,000 orders each, leader kills, node restarts and wipes, a partition, Redis failovers (SEED=n replays).
	$(GO) run ./cmd/chaos $(CHAOS_CLUSTER_FLAGS) -orders $(CHAOS_CLUSTER_ORDERS) -publish-rate 50 -outcome-ttl 4m -timeout 25m
	$(GO) run ./cmd/chaos $(CHAOS_CLUSTER_FLAGS) -kv -orders $(CHAOS_CLUSTER_ORDERS) -publish-rate 50 -outcome-ttl 4m -timeout 25m

.PHONY: chaos/cluster/short
chaos/cluster/short: $(BIN)/nats-server ## The cluster chaos suite for CI: 800 orders on Redis Sentinel, then 800 on the KV backend, every cluster disruption (about 6 minutes each on 2 cores).
	$(GO) run ./cmd/chaos $(CHAOS_CLUSTER_FLAGS) -orders $(CHAOS_CLUSTER_SHORT_ORDERS) -publish-rate 16 -kills 3 -outcome-ttl 100s -timeout 9m
	$(GO) run ./cmd/chaos $(CHAOS_CLUSTER_FLAGS) -kv -orders $(CHAOS_CLUSTER_SHORT_ORDERS) -publish-rate 16 -kills 3 -outcome-ttl 100s -timeout 9m

# ---- BoringCrypto build (bench/results/NOTES.md) ----
# BORINGCRYPTO=1 makes `make image` build the image's commands the same way.
BORINGCRYPTO ?= 0

.PHONY: build-boring
build-boring: ## Build every command into ./bin with GOEXPERIMENT=boringcrypto (cgo, static): RSA signing about 1.6x faster.
	@mkdir -p $(BIN)
	@echo "build-boring: the linker's warning about getaddrinfo (BoringSSL code Go never calls) is expected"
	GOEXPERIMENT=boringcrypto CGO_ENABLED=1 $(GO) build -trimpath -tags netgo,osusergo \
	  -ldflags '$(LDFLAGS) -linkmode=external -extldflags=-static' -o $(BIN)/ ./cmd/...
