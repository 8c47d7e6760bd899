# Build and test tasks for github.com/gormdlock/dlock.
#
# The repository holds seven Go modules: the library (root), the integration
# tests (tests/), the examples (examples/), the benchmarks (bench/), the
# command-line tool (cmd/dlock/), the OpenTelemetry adapter (otel/) and the
# repository's own tools (tools/). go.work joins all but tools/ for
# development: each submodule requires the root (and examples/ otel) at the
# release being prepared, which go.work replaces with the directory. The
# root is built and tested on its own (GOWORK=off), with exactly its go.mod;
# tools/ too, so that its requirements do not move the workspace's.
# `make test` is the canonical test command; the integration tests need the
# databases described in tests/db_test.go and skip a database that is not
# reachable.

GO ?= go
GOFMT ?= gofmt
MODULES := . tests examples cmd/dlock otel

# The example programs in examples/, in the order `make examples` runs them.
EXAMPLES := demo cron leader account pgxact python who

# Linters, pinned. `go run pkg@version` builds each once and caches it; set
# GOLANGCI_LINT=golangci-lint or STATICCHECK=staticcheck to use a binary.
GOLANGCI_LINT_VERSION := v2.15.0
STATICCHECK_VERSION := v0.8.2
GOLANGCI_LINT ?= $(GO) run github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)
STATICCHECK ?= $(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

.PHONY: all test test-unit test-integration test-cli test-otel topology partition demo vet fmt-check fmt ci examples lint staticcheck stress bench release-check tidy

all: vet fmt-check test

test: test-unit test-integration test-cli test-otel

test-unit:
	GOWORK=off $(GO) test -race -count=1 ./...

test-integration:
	cd tests && $(GO) test -race -count=1 ./...

# Production topologies (tests/topology): PgBouncer in session and
# transaction pooling, a PostgreSQL streaming hot standby, a Galera node and
# a read-only MariaDB, each started by the tests as root in a temporary
# directory on free ports (pgbouncer, postgresql, mariadb-server and
# galera-4 from Debian; a missing one skips its test, or fails it under CI or
# DLOCK_TEST_REQUIRE_DB). Takes well under a minute.
topology:
	cd tests && DLOCK_TEST_TOPOLOGY=1 $(GO) test -race -count=1 -v ./topology/

# Network partitions: a proxy that stops forwarding bounds every dlock call
# (Release, Held, Acquire) and the cut session is discarded; and real
# packet loss, where iptables drops the packets of one session's loopback
# port and the test measures when the server frees its lock (needs root
# and iptables; skips with a message otherwise, fails under CI).
partition:
	cd tests && DLOCK_TEST_PARTITION=1 $(GO) test -race -count=1 -v -run 'TestVanishedHolderFreed|TestNetworkCut' ./

# The dlock command against the same databases (same DSN variables).
test-cli:
	cd cmd/dlock && $(GO) test -race -count=1 ./...

# The OpenTelemetry adapter, with the SDK's in-memory exporters, against
# the same databases (same DSN variables).
test-otel:
	cd otel && $(GO) test -race -count=1 ./...

# TAGS=containers builds the examples with the testcontainers-go fallback
# for a server that does not answer (examples/README.md); without it they
# link no container runtime, and a first `make demo` downloads little.
TAGS ?=

demo:
	cd examples && $(GO) run -tags '$(TAGS)' ./demo

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

# Publish HEAD's modules into a file:// module proxy at the candidate
# version (VERSION, default the newest "## vX.Y.Z" of CHANGELOG.md) and
# install them from it as the README says, outside the workspace, in an
# empty GOPATH: go install .../cmd/dlock@latest and dlock -h; go get of the
# root and otel into a new module that builds. See CONTRIBUTING.md,
# "Releasing".
release-check:
	./.ci/release-check

# go mod tidy in every module (TIDY_FLAGS=-diff: report, change nothing).
# How the submodules are tidied outside the workspace: .ci/tidy.
TIDY_FLAGS ?=
tidy:
	./.ci/tidy $(TIDY_FLAGS)
