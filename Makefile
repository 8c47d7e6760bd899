# Build and test tasks for github.com/gormdlock/dlock.
#
# The repository holds three Go modules: the library (root), the integration
# tests (tests/) and the examples (examples/). `make test` is the canonical
# test command; the integration tests need the databases described in
# tests/db_test.go and skip a database that is not reachable.

GO ?= go
GOFMT ?= gofmt
MODULES := . tests examples

.PHONY: all test test-unit test-integration demo vet fmt-check fmt ci

all: vet fmt-check test

test: test-unit test-integration

test-unit:
	$(GO) test -race -count=1 ./...

test-integration:
	cd tests && $(GO) test -race -count=1 ./...

demo:
	cd examples && $(GO) run ./demo

vet:
	@set -e; for m in $(MODULES); do \
		echo "go vet ($$m)"; \
		(cd $$m && $(GO) vet ./...); \
	done

# gofmt walks the whole tree, so "." covers tests/ and examples/ too.
fmt-check:
	@out=$$($(GOFMT) -l .); \
	if [ -n "$$out" ]; then \
		echo "gofmt needed on:"; echo "$$out"; exit 1; \
	fi

fmt:
	$(GOFMT) -w .

ci:
	./.ci/run
