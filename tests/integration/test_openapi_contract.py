"""Each service answers as the OpenAPI document it serves says: schemathesis (the CLI, pinned
in constraints.txt) fuzzes every operation of the running stack with a bounded number of
cases and fails on a 5xx, an undocumented status, content type or header, an answer that
breaks its schema, invalid input accepted, or a 405 without the path's methods in Allow.

Phases: the schema's examples, coverage (boundary and wrong-type values of every field) and
fuzzing; not the stateful phase, which follows links from a list to its items and would
replay other tests' dead letters on this shared stack. Seeded, so a failure reproduces.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from devstack.stack import Stack

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
# Cases per operation in the fuzzing phase (coverage adds its own, bounded by the schema).
MAX_EXAMPLES = 10
# Who calls: a client whose scopes most of the service's operations need (the others are
# checked answering 403 as documented).
CALLERS = {
    "intake": "motcua-h22",
    "routing": "gateway-operator",
    "notify": "gateway-operator",
    "identity": "motcua-h22",
}
# Operations not fuzzed, and why: they would change what other tests of the shared stack rely
# on. The client tests (test_openapi_clients.py) still call requestToken as documented.
NOT_FUZZED: dict[str, dict[str, str]] = {
    "identity": {
        "requestToken": "failed client authentications throttle the caller's address "
        "(services/identity/token_guard.py), and every test calls from 127.0.0.1",
    },
    "routing": {
        "reloadCatalogue": "loads catalogue/*.yaml again: the catalogue reload test changes "
        "those files under the running stack",
    },
    "notify": {
        "createWebhookSubscription": "the demo agencies' subscriptions are the webhook "
        "tests' fixtures, bounded per agency (WEBHOOK_MAX_SUBSCRIPTIONS)",
        "deleteWebhookSubscription": "would delete the webhook tests' subscriptions",
    },
}
# On every service: maintenance mode, fuzzed on, would hold every other test's work.
NOT_FUZZED_ANYWHERE = ("switchMaintenance",)
SUMMARY = re.compile(r"(\d+) generated, (\d+) passed")


@pytest.mark.parametrize("service", sorted(CALLERS))
def test_the_service_answers_as_its_openapi_says(
    stack: Stack, service: str, tmp_path: Path
) -> None:
    token = stack.credentials.token(stack.url("identity"), CALLERS[service])
    excluded = [
        arg
        for name in (*NOT_FUZZED.get(service, {}), *NOT_FUZZED_ANYWHERE)
        for arg in ("--exclude-operation-id", name)
    ]
    run = subprocess.run(
        [
            str(SCHEMATHESIS),
            "run",
            stack.url(service) + "/openapi.json",
            "--header",
            f"Authorization: Bearer {token}",
            "--phases",
            "examples,coverage,fuzzing",
            "--checks",
            "all",
            # Valid by the schema is not always acceptable: a procedure must be in the
            # catalogue, a transfer must exist. Invalid input refused is checked.
            "--exclude-checks",
            "positive_data_acceptance",
            "--max-examples",
            str(MAX_EXAMPLES),
            "--seed",
            "1",
            "--generation-database",
            "none",
            # One worker: hypothesis' lambda descriptions are not thread-safe on CPython 3.11
            # (SystemError from ast.parse when two workers build strategies at once).
            "--workers",
            "1",
            "--request-timeout",
            "30",
            "--no-color",
            *excluded,
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    report = run.stdout[-8000:] + run.stderr[-2000:]
    assert run.returncode == 0, report
    summary = SUMMARY.search(run.stdout)
    assert summary is not None, report
    generated, passed = int(summary[1]), int(summary[2])
    assert generated == passed > 0, report
    print(f"{service}: {generated} cases, all conforming")
