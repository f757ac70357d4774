# The one entry point for developers and CI. Every target uses the project venv.
#
# `make run` and `make test` install whatever is missing first: each install step ends in a
# stamp file that make compares with what it was made from, so a second run does no work
# and an edited pyproject.toml, constraints.txt or pom.xml is installed again.
PYTHON ?= python3
PY ?= .venv/bin/python
PROTO_FILES := $(wildcard proto/gateway/v1/*.proto)

VENV := .venv/.installed
KAFKA_JARS := .cache/kafka/libs/.resolved
OIDC_TEST_JARS := .cache/oidc-test/libs/.resolved
OPENAPI_GENERATOR_JARS := .cache/openapi-generator/libs/.resolved

JAEGER := .cache/jaeger/bin/jaeger

# Go for Jaeger, whatever the shell has: the go.mod's own toolchain (no download of another),
# a module cache whose files `rm -rf` can delete, and caches in .cache/ where the machine
# has none (no HOME: `go env` then names no module cache, and the build cache is "off").
GO ?= go
GO_MODCACHE := $(or $(GOMODCACHE),$(shell $(GO) env GOMODCACHE 2>/dev/null),$(CURDIR)/.cache/go/mod)
GO_BUILDCACHE := $(filter-out off,$(or $(GOCACHE),$(shell $(GO) env GOCACHE 2>/dev/null)))
GO_ENV := GOTOOLCHAIN=local GOFLAGS="-modcacherw -buildvcs=false -mod=readonly" \
	GOMODCACHE="$(GO_MODCACHE)" GOCACHE="$(or $(GO_BUILDCACHE),$(CURDIR)/.cache/go/build)"

.PHONY: help install proto run test test-unit test-integration lint typecheck bench chaos overload \
	kafka-jars oidc-test-jars openapi-generator-jars jaeger postgres-server clean

help:
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

install: $(VENV) ## Create .venv and install the project with dev tools (pinned by constraints.txt)

$(VENV): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
		|| { echo "Python >= 3.11 is needed: make PYTHON=python3.11 ..."; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv .venv
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	touch $@

kafka-jars: $(KAFKA_JARS) ## Resolve Apache Kafka's jars from Maven Central into .cache/kafka/libs

oidc-test-jars: $(OIDC_TEST_JARS) ## Resolve NAV's mock-oauth2-server (a second OIDC provider for tests) into .cache/oidc-test/libs

openapi-generator-jars: $(OPENAPI_GENERATOR_JARS) ## Resolve OpenAPI Generator (Java clients of the served OpenAPI, for tests) into .cache/openapi-generator/libs

# A changed pom starts from an empty directory: jars of an old version left beside the new
# ones would both be on the broker's classpath.
.cache/%/libs/.resolved: deploy/%/pom.xml
	@command -v mvn >/dev/null || { echo "Maven and Java 17 are needed (e.g. apt-get install maven openjdk-17-jdk-headless)"; exit 1; }
	rm -rf $(@D)
	mvn -q -B -f $< package
	touch $@

jaeger: $(JAEGER) ## Build Jaeger v2 (make run then exports traces to it) from the Go module proxy into .cache/jaeger/bin (a long compile)

# The binary is its own stamp: rebuilt when deploy/jaeger/go.mod or go.sum change. `go build`
# leaves an up-to-date binary's time alone, hence the touch.
$(JAEGER): deploy/jaeger/go.mod deploy/jaeger/go.sum
	@command -v $(GO) >/dev/null || { echo "Go >= 1.24.6 is needed to build Jaeger"; exit 1; }
	cd deploy/jaeger && $(GO_ENV) $(GO) build -trimpath -o $(CURDIR)/$@ github.com/jaegertracing/jaeger/cmd/jaeger
	touch $@

postgres-server: ## PostgreSQL's server binaries for the tests, from the distribution, unless present
	@test -n "$$GATEWAY_TEST_DATABASE_URL" || deploy/postgres/install.sh

proto: $(VENV) ## Regenerate gen/ from proto/ (stubs are committed; tests fail when stale)
	$(PY) -m devstack.protogen gen

run: $(VENV) $(KAFKA_JARS) ## Start Kafka, the four services, the operators' console and the sandbox stand-ins (Ctrl-C stops all)
	$(PY) -m devstack.run

test: $(VENV) $(KAFKA_JARS) $(OIDC_TEST_JARS) $(OPENAPI_GENERATOR_JARS) postgres-server ## Unit and integration tests against real Kafka and PostgreSQL
	$(PY) -m pytest

test-unit: $(VENV) ## Fast tests only
	$(PY) -m pytest -m "not integration"

test-integration: $(VENV) $(KAFKA_JARS) $(OIDC_TEST_JARS) $(OPENAPI_GENERATOR_JARS) postgres-server ## Tests that need the broker and the database
	$(PY) -m pytest -m integration

lint: $(VENV) ## ruff and mypy
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

chaos: $(VENV) $(KAFKA_JARS) postgres-server ## Long chaos run: 2,400 dossiers while every component is SIGKILLed in turn (SQLite, then PostgreSQL)
	$(PY) -m devstack.chaos --dossiers 2400 --rate 8 --database sqlite --settle 900
	$(PY) -m devstack.chaos --dossiers 2400 --rate 8 --database postgres --settle 900

# What the stack completes end to end on the benchmark machine (make bench: ~20 dossiers/s).
CAPACITY ?= 20
overload: $(VENV) $(KAFKA_JARS) ## Overload run: dossiers offered at 2x, then 4x CAPACITY for a minute each, nobody killed
	$(PY) -m devstack.chaos --no-kills --dossiers $$((120 * $(CAPACITY))) --rate $$((2 * $(CAPACITY))) --settle 900
	$(PY) -m devstack.chaos --no-kills --dossiers $$((240 * $(CAPACITY))) --rate $$((4 * $(CAPACITY))) --settle 900

bench: $(VENV) $(KAFKA_JARS) postgres-server ## Gateway against a bare pipeline of the same hops: throughput, latency, CPU per dossier (closed and open loop, durable PostgreSQL)
	$(PY) -m devstack.bench

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
