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

# gowork,DIR: "GOWORK=off" for the modules outside the workspace (the shell
# variable $$m holds DIR).
gowork = $$(case $(1) in .|tools) echo GOWORK=off;; esac)
GOFMT ?= gofmt
MODULES := . tests examples cmd/dlock otel tools

# The example programs in examples/, in the order `make examples` runs them.
EXAMPLES := demo cron leader gocron account pgxact python who

# Linters, pinned. `go run pkg@version` builds each once and caches it; set
# GOLANGCI_LINT=golangci-lint or STATICCHECK=staticcheck to use a binary.
GOLANGCI_LINT_VERSION := v2.15.0
STATICCHECK_VERSION := v0.8.2
GOLANGCI_LINT ?= $(GO) run github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)
STATICCHECK ?= $(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

.PHONY: all test test-unit test-integration test-cli test-otel test-long topology partition demo vet fmt-check fmt ci examples lint staticcheck stress bench release-check tidy

all: vet fmt-check test

# `make test` runs the four groups below with `go test -json` through
# tools/testsum, which prints what plain go test prints, then one summary:
# how many tests ran, how many were skipped, and which target runs each
# skipped group (make test-long, make topology, make partition, make
# stress); testsum takes the target from the skip message. A failing
# group does not stop the others. Each group alone (make test-unit, ...)
# runs plain go test.
GOTEST ?= $(GO) test
TESTSUM := $(CURDIR)/bin/testsum
TEST_RESULTS := $(CURDIR)/bin/test-results.jsonl

test:
	@cd tools && GOWORK=off $(GO) build -o $(TESTSUM) ./testsum
	@rm -f $(TEST_RESULTS)
	@status=0; for t in test-unit test-integration test-cli test-otel; do \
		$(MAKE) --no-print-directory $$t GOTEST='$(TESTSUM) -record $(TEST_RESULTS) -- $(GO) test -json' || status=1; \
	done; \
	$(TESTSUM) -report $(TEST_RESULTS) || status=1; \
	exit $$status

test-unit:
	GOWORK=off $(GOTEST) -race -count=1 ./...

# -parallel 8: the tests that call t.Parallel mostly sleep (idle reapers,
# a frozen proxy), and each runs its MariaDB and PostgreSQL halves at once.
test-integration:
	cd tests && $(GOTEST) -race -count=1 -parallel 8 ./...

# The long group of tests/ (long_test.go) and cmd/dlock: tests that wait
# seconds by design (loss and release bounds against a clock, the elector,
# heap measurements, dlock run's busy and lost exits). `make test` skips
# them to stay under a minute; about a minute and a half here.
# tests/'s TestLongGroupInMakefile checks that LONG_TESTS and
# LONG_CLI_TESTS match exactly the tests that begin with needLongRun(t).
LONG_TESTS := '^(TestSlowObserverDelaysNoSignal|TestLossToldAsWhatItWas|TestMemoryPerConnection|TestMemoryClosedPool|TestSlowReleaseWithinItsBound|TestNativeWaitNoPolling|TestBusyReturnsFalseNil|TestElectorHandOver|TestElectorResign|TestElectorBackoff|TestElectorBeaconInterrupted|TestElectorPoolExhausted|TestElectorLeaderProcessDies|TestFnContextEndsDuringStatement|TestCancelWithoutControlConnectionDiscards|TestLossSignalDone)$$'

LONG_CLI_TESTS := '^(TestRunBusy|TestRunLost|TestRunLostKillAfter)$$'

test-long:
	cd tests && DLOCK_TEST_LONG=1 $(GO) test -race -count=1 -v -run $(LONG_TESTS) ./
	cd cmd/dlock && DLOCK_TEST_LONG=1 $(GO) test -race -count=1 -v -run $(LONG_CLI_TESTS) ./

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
	cd cmd/dlock && $(GOTEST) -race -count=1 -parallel 8 ./...

# The OpenTelemetry adapter, with the SDK's in-memory exporters, against
# the same databases (same DSN variables).
test-otel:
	cd otel && $(GOTEST) -race -count=1 ./...

# TAGS=containers builds the examples with the testcontainers-go fallback
# for a server that does not answer (examples/README.md); without it they
# link no container runtime, and a first `make demo` downloads little.
TAGS ?=

# The demo is built the quick way, for one run: pure Go (both drivers are;
# no C compiler runs), without debug information and without inlining,
# which a first run on empty caches would otherwise spend about a quarter
# of its compile time on (43 s -> 33 s of building on 2 cores).
DEMO_BUILD := -ldflags=-w -gcflags=all='-dwarf=false -l'


demo:
	cd examples && CGO_ENABLED=0 $(GO) run -tags '$(TAGS)' $(DEMO_BUILD) ./demo

# The root and tools/ are vetted, linted and tested outside the workspace
# (GOWORK=off), with their own go.mod.
vet:
	@set -e; for m in $(MODULES); do \
		echo "go vet ($$m)"; \
		(cd $$m && env $(call gowork,$$m) $(GO) vet ./...); \
	done
	cd examples && $(GO) vet -tags containers ./...

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

# Run every example program; each prints what it does and skips a database
# it cannot reach (see examples/README.md).
examples:
	@set -e; for e in $(EXAMPLES); do \
		echo "==> examples/$$e"; \
		(cd examples && $(GO) run -tags '$(TAGS)' ./$$e); \
	done

# golangci-lint with .golangci.yml, in each module; reports every module
# before failing.
lint:
	@status=0; for m in $(MODULES); do \
		echo "golangci-lint ($$m)"; \
		(cd $$m && env $(call gowork,$$m) $(GOLANGCI_LINT) run --config $(CURDIR)/.golangci.yml ./...) || status=1; \
	done; exit $$status

# staticcheck alone, in each module (golangci-lint runs it too; this is the
# light check .ci/run does).
staticcheck:
	@status=0; for m in $(MODULES); do \
		echo "staticcheck ($$m)"; \
		(cd $$m && env $(call gowork,$$m) $(STATICCHECK) ./...) || status=1; \
	done; exit $$status

# Failure tests at scale (DLOCK_STRESS multiplies their rounds; as root,
# TestServerRestart stops and starts the local servers), the heap soak
# (TestStressHeapSoak: about three minutes per server; the full soak is
# DLOCK_SOAK_CYCLES=100000 with a STRESS_TIMEOUT of hours, as PostgreSQL
# dials a session per cycle without idle connections), then a short fuzz
# run of the key mapping. `.ci/run` runs it after `make test`.
STRESS ?= 20
STRESS_TIMEOUT ?= 30m
FUZZTIME ?= 15s

stress:
	cd tests && DLOCK_STRESS=$(STRESS) $(GO) test -race -count=1 -timeout $(STRESS_TIMEOUT) -v -run 'Stress|ServerRestart' ./...
	GOWORK=off $(GO) test -run '^$$' -fuzz '^FuzzPgKey$$' -fuzztime $(FUZZTIME) .
	GOWORK=off $(GO) test -run '^$$' -fuzz '^FuzzMySQLName$$' -fuzztime $(FUZZTIME) .

# Benchmarks of dlock against the same SQL written by hand and the Go peers,
# on the local MariaDB and PostgreSQL (DSNs as for the integration tests):
# runs every series BENCH_ROUNDS times, interleaved, prints one table per
# database with ratios against raw SQL, and writes bench/results/.
BENCH_ROUNDS ?= 3

bench:
	cd bench && $(GO) run ./cmd/benchtab -rounds $(BENCH_ROUNDS) -out results

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
