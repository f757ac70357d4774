# The one entry point for developers and CI. Every target uses the project venv.
PY ?= .venv/bin/python
PROTO_FILES := $(wildcard proto/gateway/v1/*.proto)

.PHONY: help install proto run test test-unit test-integration lint typecheck bench chaos kafka-jars clean

help:
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

install: ## Create .venv and install the project with dev tools
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q -e ".[dev]"

kafka-jars: ## Resolve Apache Kafka's jars from Maven Central into .cache/kafka/libs
	mvn -q -B -f deploy/kafka/pom.xml package

.PHONY: oidc-test-jars
oidc-test-jars: ## Resolve NAV's mock-oauth2-server (a second OIDC provider for tests) into .cache/oidc-test/libs
	mvn -q -B -f deploy/oidc-test/pom.xml package

proto: ## Regenerate gen/ from proto/ (stubs are committed; tests fail when stale)
	$(PY) -m devstack.protogen gen

run: ## Start Kafka, the four services and the sandbox stand-ins (Ctrl-C stops all)
	$(PY) -m devstack.run

test: ## Unit and integration tests against real Kafka and PostgreSQL
	$(PY) -m pytest

test-unit: ## Fast tests only
	$(PY) -m pytest -m "not integration"

test-integration: ## Tests that need the broker and the database
	$(PY) -m pytest -m integration

lint: ## ruff and mypy
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

chaos: ## Long chaos run: 2,400 dossiers while every component is SIGKILLed in turn (SQLite, then PostgreSQL)
	$(PY) -m devstack.chaos --dossiers 2400 --rate 8 --database sqlite --settle 900
	$(PY) -m devstack.chaos --dossiers 2400 --rate 8 --database postgres --settle 900

bench: ## Throughput and latency of the full stack against a bare pipeline
	$(PY) -m devstack.bench

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
