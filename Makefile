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
ZIPKIN_JAR := .cache/zipkin/libs/.resolved

.PHONY: help install proto run test test-unit test-integration lint typecheck bench chaos overload replicas \
	kafka-jars oidc-test-jars openapi-generator-jars zipkin-jar postgres-server clean

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

zipkin-jar: $(ZIPKIN_JAR) ## Fetch Zipkin's server (the trace UI of make run, Lens inside) from Maven Central into .cache/zipkin/libs

# A changed pom starts from an empty directory: jars of an old version left beside the new
# ones would both be on the broker's classpath.
.cache/%/libs/.resolved: deploy/%/pom.xml
	@command -v mvn >/dev/null || { echo "Maven and Java 17 are needed (e.g. apt-get install maven openjdk-17-jdk-headless)"; exit 1; }
	rm -rf $(@D)
	mvn -q -B -f $< package
	touch $@

postgres-server: ## PostgreSQL's server binaries for the tests, from the distribution, unless present
	@test -n "$$GATEWAY_TEST_DATABASE_URL" || deploy/postgres/install.sh

proto: $(VENV) ## Regenerate gen/ from proto/ (stubs are committed; tests fail when stale)
	$(PY) -m devstack.protogen gen

run: $(VENV) $(KAFKA_JARS) $(ZIPKIN_JAR) ## Start Kafka, Zipkin, the four services, the operators' console and the sandbox stand-ins (Ctrl-C stops all)
	$(PY) -m devstack.run

test: $(VENV) $(KAFKA_JARS) $(OIDC_TEST_JARS) $(OPENAPI_GENERATOR_JARS) $(ZIPKIN_JAR) postgres-server ## Unit and integration tests against real Kafka and PostgreSQL
	$(PY) -m pytest

test-unit: $(VENV) ## Fast tests only
	$(PY) -m pytest -m "not integration"

test-integration: $(VENV) $(KAFKA_JARS) $(OIDC_TEST_JARS) $(OPENAPI_GENERATOR_JARS) $(ZIPKIN_JAR) postgres-server ## Tests that need the broker and the database
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

replicas: $(VENV) $(KAFKA_JARS) postgres-server ## Scale-out run: 2 replicas of each service (PostgreSQL), 3 Kafka brokers; the first replica of each and a broker SIGKILLed while 1,200 dossiers come in
	$(PY) -m devstack.chaos --replicas 2 --brokers 3 --database postgres --dossiers 1200 --rate 8 --down 10 --settle 900

bench: $(VENV) $(KAFKA_JARS) postgres-server ## Gateway against a bare pipeline of the same hops: throughput, latency, CPU per dossier (closed and open loop, durable PostgreSQL)
	$(PY) -m devstack.bench

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
