# users: make help lists the targets.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

BIN := $(CURDIR)/bin
export PATH := $(BIN):$(PATH)

# Pinned tools (tools/go.mod) are built into bin/ on first use: the code
# generators, staticcheck, and grpcurl for the README examples.
TOOLS := $(BIN)/sqlc $(BIN)/buf $(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-grpc $(BIN)/grpcurl $(BIN)/staticcheck
# helm and actionlint have a module of their own (tools/deploy/go.mod), so
# that Kubernetes' dependencies do not move the versions of the tools above.
DEPLOY_TOOLS := $(BIN)/helm $(BIN)/actionlint
GO_TEST_FLAGS ?= -race -shuffle=on -count=1 -timeout=15m

# With no database given, run, test and bench start a throwaway PostgreSQL
# of their own: run needs DATABASE_URL, the tests take TEST_DATABASE_URL too.
WITHPG_RUN := $(if $(DATABASE_URL),,$(BIN)/withpg --)
WITHPG := $(if $(or $(TEST_DATABASE_URL),$(DATABASE_URL)),,$(BIN)/withpg --)

.PHONY: help
help: ## List the targets.
	@awk 'BEGIN {FS = ":.*## "} /^[a-z0-9-]+:.*## / {printf "  %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: tools
tools: $(TOOLS) $(DEPLOY_TOOLS) ## Build the pinned tools into bin/.
$(TOOLS) &: tools/go.mod tools/go.sum
	cd tools && go build -o $(BIN)/ tool

.PHONY: generate
generate: $(TOOLS) ## Regenerate Go from sql/ (sqlc) and proto/ (buf).
	sqlc generate
	rm -rf internal/gen && buf generate

# buf breaking holds proto/ to the API as it was where this branch left main
# (their merge base: a branch behind main is not blamed for what main added
# since), under buf.yaml's breaking rules, from the local git history alone.
# A clone without main, a CI checkout of a single commit, fails here with
# what to fetch: compared with nothing, the check would prove nothing.
.PHONY: breaking
breaking: $(BIN)/buf ## Check that proto/ breaks nothing of main's API (buf breaking, offline).
	@main=$$(git rev-parse -q --verify refs/heads/main || git rev-parse -q --verify refs/remotes/origin/main) || \
	  { echo "breaking: no branch main (nor origin/main) to compare proto/ with: 'git fetch origin main:main'" \
	    "(actions/checkout: fetch-depth: 0)"; exit 1; }; \
	  base=$$(git merge-base HEAD "$$main") || \
	  { echo "breaking: HEAD and main $$main share no commit here (a shallow clone?): 'git fetch --unshallow origin'"; exit 1; }; \
	  echo "buf breaking --against main's API at $$(git rev-parse --short "$$base")"; \
	  buf breaking --against "$$(git rev-parse --git-common-dir)#ref=$$base"

.PHONY: check
check: lint breaking ## Everything static: no generated-code drift, formatting, lint, no breaking API change.
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

# make bench measures the service beside a reference implementation, a bare
# gRPC floor, and pgbench running the cheapest statements and the service's
# own (scripts/bench), on a throwaway PostgreSQL unless DATABASE_URL names a
# server: N users (default 1000000), DURATION per run, CONCURRENCY, ROUNDS
# (default 3), JSON file.
BENCH_ARGS = $(if $(N),-n $(N)) $(if $(DURATION),-duration $(DURATION)) \
  $(if $(CONCURRENCY),-concurrency $(CONCURRENCY)) $(if $(ROUNDS),-rounds $(ROUNDS)) $(if $(JSON),-json $(JSON))
.PHONY: bench
bench: ## Measure the service beside a reference, a floor and pgbench (N, DURATION, CONCURRENCY, ROUNDS, JSON to tune).
	go run ./scripts/bench $(BENCH_ARGS)

BENCH_FLAGS ?= -benchtime=1s -count=6
.PHONY: gobench
gobench: build ## Run the Go benchmarks against a real PostgreSQL (BENCH_FLAGS to tune).
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

# helm's release builds stamp its version and the Kubernetes version that
# helm template and helm lint assume; a plain go build would assume 1.20.
$(BIN)/helm: tools/deploy/go.mod tools/deploy/go.sum
	cd tools/deploy && \
	  helm=$$(go list -m -f '{{.Version}}' helm.sh/helm/v3) && \
	  k8s=$$(go list -m -f '{{.Version}}' k8s.io/client-go | cut -d. -f2) && \
	  go build -o $@ -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$$helm \
	    -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$$k8s \
	    -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$$k8s" \
	    helm.sh/helm/v3/cmd/helm
$(BIN)/actionlint: tools/deploy/go.mod tools/deploy/go.sum
	cd tools/deploy && go build -o $@ github.com/rhysd/actionlint/cmd/actionlint

# The offline checks of what ships (tools/deploy); they find bin/helm.
DEPLOY_TEST := cd tools/deploy && HELM=$(BIN)/helm go test -count=1

.PHONY: chart
chart: $(BIN)/helm ## Check helm/users offline: lint, render, strict decode, Pod Security.
	$(DEPLOY_TEST) ./kube/ ./chart/

.PHONY: deploy-check
deploy-check: $(TOOLS) $(DEPLOY_TOOLS) ## Check what ships: chart, Dockerfile, DevSpace, workflows, e2e/.
	cd tools/deploy && go vet ./... && staticcheck ./...
	@cd tools/deploy && go mod tidy -diff || { echo "tools/deploy/go.mod is not tidy: run 'go mod tidy' there"; exit 1; }
	@test -z "$$(gofmt -l tools/deploy e2e)" || { gofmt -l tools/deploy e2e; echo "run gofmt -w"; exit 1; }
	go vet -tags e2e ./e2e/
	staticcheck -tags e2e ./e2e/
	$(DEPLOY_TEST) ./...
	actionlint

.PHONY: e2e
e2e: build ## Run e2e/ against USERS_ADDRESS, or against this tree served locally.
	bash scripts/e2e.sh

# VERSION is the release tag, v1.2.3: the image and the chart drop the v.
# The image is stamped with HEAD's commit (Go cannot read .git in the build),
# so the tree must be committed: an image of uncommitted changes would name
# a commit that does not hold them, and a pushed release should not be one.
.PHONY: image
image: ## Build and push the multi-arch image (make image VERSION=v1.2.3 [IMAGE=...]); needs Docker buildx.
	@test -n "$(VERSION)" || { echo "VERSION is required, e.g. make image VERSION=v1.2.3"; exit 2; }
	@test -z "$$(git status --porcelain)" || \
	  { git status --short; echo "image: the tree has uncommitted changes (above): commit or stash them first"; exit 1; }
	docker buildx build --platform linux/amd64,linux/arm64 --build-arg VERSION=$(VERSION) \
	  --build-arg COMMIT=$$(git rev-parse HEAD) \
	  -t $(or $(IMAGE),ghcr.io/agynio/users):$(patsubst v%,%,$(VERSION)) --push .

.PHONY: chart-package
chart-package: $(BIN)/helm ## Package the chart into dist/ (make chart-package VERSION=v1.2.3).
	@test -n "$(VERSION)" || { echo "VERSION is required, e.g. make chart-package VERSION=v1.2.3"; exit 2; }
	helm package helm/users --version $(patsubst v%,%,$(VERSION)) --app-version $(patsubst v%,%,$(VERSION)) --destination dist
