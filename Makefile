# users: make help lists the targets.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

BIN := $(CURDIR)/bin
export PATH := $(BIN):$(PATH)

# Pinned tools (tools/go.mod) are built into bin/ on first use: the code
# generators, staticcheck, and grpcurl for the README examples.
TOOLS := $(BIN)/sqlc $(BIN)/buf $(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-grpc $(BIN)/grpcurl $(BIN)/staticcheck
GO_TEST_FLAGS ?= -race -shuffle=on -count=1 -timeout=15m

# With no database given, run, test and bench start a throwaway PostgreSQL
# of their own: run needs DATABASE_URL, the tests take TEST_DATABASE_URL too.
WITHPG_RUN := $(if $(DATABASE_URL),,$(BIN)/withpg --)
WITHPG := $(if $(or $(TEST_DATABASE_URL),$(DATABASE_URL)),,$(BIN)/withpg --)

.PHONY: help
help: ## List the targets.
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: tools
tools: $(TOOLS) ## Build the pinned code generators into bin/.
$(TOOLS) &: tools/go.mod tools/go.sum
	cd tools && go build -o $(BIN)/ tool

.PHONY: generate
generate: $(TOOLS) ## Regenerate Go from sql/ (sqlc) and proto/ (buf).
	sqlc generate
	rm -rf internal/gen && buf generate

.PHONY: check
check: lint ## Everything static: no generated-code drift, formatting, lint.
	@sqlc diff || { echo "internal/db is stale: run 'make generate' and commit"; exit 1; }
	@rm -rf internal/gen && buf generate && \
	  test -z "$$(git status --porcelain -- internal/gen)" || \
	  { git status --short -- internal/gen; echo "internal/gen is stale: run 'make generate' and commit"; exit 1; }
	buf format -d --exit-code
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "run gofmt -w"; exit 1; }
	@go mod tidy -diff || { echo "go.mod is not tidy: run 'go mod tidy'"; exit 1; }

.PHONY: lint
lint: $(TOOLS) ## Lint Go (go vet, staticcheck), SQL (sqlc vet) and the API (buf lint).
	go vet ./...
	staticcheck ./...
	sqlc vet
	buf lint

.PHONY: build
build: ## Build bin/users and bin/withpg.
	go build -o $(BIN)/ ./cmd/users ./scripts/withpg

.PHONY: test
test: build ## Run all tests against a real PostgreSQL (throwaway unless TEST_DATABASE_URL/DATABASE_URL is set).
	$(WITHPG) go test $(GO_TEST_FLAGS) ./...

BENCH_FLAGS ?= -benchtime=1s -count=6
.PHONY: bench
bench: build ## Run the benchmarks against a real PostgreSQL (BENCH_FLAGS to tune).
	$(WITHPG) go test -run '^$$' -bench . -benchmem $(BENCH_FLAGS) ./...

.PHONY: run
run: build ## Migrate and serve on :50051 (throwaway PostgreSQL unless DATABASE_URL is set).
	$(WITHPG_RUN) sh -c '$(BIN)/users migrate up && exec $(BIN)/users serve'

.PHONY: migrate
migrate: build ## Apply pending migrations to DATABASE_URL (make migrate ACTION=down|status).
	@test -n "$${DATABASE_URL:-}" || { echo "DATABASE_URL is required"; exit 2; }
	$(BIN)/users migrate $(or $(ACTION),up)

.PHONY: clean
clean: ## Remove bin/.
	rm -rf $(BIN)
