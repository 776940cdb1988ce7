# nvent — common tasks. `make test` is the one command that runs every test.
GO        ?= go
BIN       ?= bin/nvent
TEST_FLAGS ?= -race -count=1 -timeout 30m

.PHONY: all build run services test test-short lint generate verify tidy-check compose-check fuzz

all: verify build

build: ## build bin/nvent
	$(GO) build -o $(BIN) ./cmd/app

run: ## run the service with the embedded defaults (SQLite under ./data, in-memory stream)
	$(GO) run ./cmd/app serve

services: ## make sure Postgres and Redis are up for the tests (starts them if needed)
	./scripts/services.sh

test: services ## every test, with the race detector, against real Postgres and Redis
	$(GO) test $(TEST_FLAGS) ./...

test-short: ## the fast tests only (no race detector)
	$(GO) test -short -count=1 ./...

FUZZTIME ?= 20s
FUZZMINIMIZETIME ?= 3s

fuzz: ## run every fuzz target (func FuzzXxx in a _test.go file) for FUZZTIME each; a crasher is saved under testdata/fuzz and fails the run
	@failed=""; for f in $$(grep -rlE '^func Fuzz[A-Za-z0-9_]*\(' --include='*_test.go' internal cmd | sort); do \
	  for name in $$(sed -nE 's/^func (Fuzz[A-Za-z0-9_]*)\(.*/\1/p' $$f); do \
	    echo "== $$name (./$$(dirname $$f), $(FUZZTIME))"; \
	    $(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) ./$$(dirname $$f) || failed="$$failed $$name"; \
	  done; \
	done; \
	if [ -n "$$failed" ]; then echo "fuzzing failed:$$failed"; exit 1; fi

lint: ## gofmt and go vet
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

generate: ## regenerate internal/di/wire_gen.go
	$(GO) tool wire ./internal/di

verify: lint tidy-check compose-check ## lint, and check that wire_gen.go, go.mod and docker-compose.yml are sound
	$(GO) tool wire diff ./internal/di
	$(GO) build ./...

compose-check: ## validate docker-compose.yml (needs docker-compose or docker compose; no engine)
	@if command -v docker-compose >/dev/null 2>&1; then NVENT_AUTH_TOKEN=check docker-compose config -q && echo "docker-compose.yml: valid"; \
	elif docker compose version >/dev/null 2>&1; then NVENT_AUTH_TOKEN=check docker compose config -q && echo "docker-compose.yml: valid"; \
	else echo "docker-compose.yml: not checked (install Debian's docker-compose to check it)"; fi

tidy-check: ## fail (changing nothing) when go.mod/go.sum are not what go mod tidy makes
	@tmp=$$(mktemp -d); cp go.mod go.sum $$tmp/; \
	$(GO) mod tidy; \
	if ! cmp -s go.mod $$tmp/go.mod || ! cmp -s go.sum $$tmp/go.sum; then \
	  echo "go.mod/go.sum are not tidy: run go mod tidy"; diff $$tmp/go.mod go.mod; \
	  cp $$tmp/go.mod $$tmp/go.sum .; rm -rf $$tmp; exit 1; fi; rm -rf $$tmp
