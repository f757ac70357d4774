"""The `gateway` operators' CLI against the running stack, as an operator runs it: with the
operator client's credentials in GATEWAY_* variables, for people and with --json for
scripts, and with the exit codes scripts test."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from typer.testing import CliRunner

from cli.client import ExitCode
from cli.config import SERVICES
from cli.main import app
from core.clock import SYSTEM_CLOCK, VIETNAM
from devstack.stack import Stack
from tests.support.agencies import BIRTH_AGENCY, behave, birth_registration
from tests.support.flows import DESK, agency_transfers, eventually, submit, wait_completed

runner = CliRunner()
OPERATOR = "gateway-operator"


@pytest.fixture
def env(stack: Stack, tmp_path: Path) -> dict[str, str]:
    """The operator's environment; HOME elsewhere so no config file of this machine counts."""
    return {f"GATEWAY_{s.upper()}_URL": stack.url(s) for s in SERVICES} | {
        "GATEWAY_CLIENT_ID": OPERATOR,
        "GATEWAY_CLIENT_SECRET": stack.credentials.clients[OPERATOR].secret,
        "HOME": str(tmp_path),
        "COLUMNS": "200",  # a wide terminal: tables keep ids and codes on one line
    }


def gateway(env: dict[str, str], *args: str) -> Result:
    return runner.invoke(app, list(args), env=env)


def as_json(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_health_shows_every_service_ready(env: dict[str, str]) -> None:
    answers = as_json(gateway(env, "health", "--json"))
    assert set(answers) == set(SERVICES)
    assert {a["status"] for a in answers.values()} == {"ok"}
    shown = gateway(env, "health")
    assert shown.exit_code == 0
    assert all(service in shown.stdout for service in SERVICES)


def test_a_dossier_timeline_and_the_exit_codes_of_a_lookup(
    stack: Stack, env: dict[str, str]
) -> None:
    code = submit(stack, birth_registration("cli-timeline@example.vn"))
    wait_completed(stack, code)

    journey = as_json(gateway(env, "dossier", code, "--json"))
    assert journey["dossier_code"] == code
    assert [s["agency_code"] for s in journey["steps"]] == [BIRTH_AGENCY]
    shown = gateway(env, "dossier", code)
    assert shown.exit_code == 0
    assert code in shown.stdout
    assert BIRTH_AGENCY in shown.stdout
    # The trace link when routing gives one, else the trace id.
    assert (journey.get("trace_url") or journey["trace_id"]) in shown.stdout

    unknown = gateway(env, "dossier", "000.00.01.H22-000101-9999")
    assert unknown.exit_code == ExitCode.NOT_FOUND
    assert "No such dossier" in unknown.output

    wrong_secret = gateway(env | {"GATEWAY_CLIENT_SECRET": "not-the-secret"}, "dossier", code)
    assert wrong_secret.exit_code == ExitCode.AUTH_REFUSED
    # A desk's own client has a token, but not the scope to read timelines.
    desk = stack.credentials.client_for(DESK)
    not_allowed = env | {"GATEWAY_CLIENT_ID": desk.client_id, "GATEWAY_CLIENT_SECRET": desk.secret}
    refused = gateway(not_allowed, "dossier", code)
    assert refused.exit_code == ExitCode.AUTH_REFUSED
    assert "403" in refused.output


def test_the_monthly_report_as_json_and_csv(stack: Stack, env: dict[str, str]) -> None:
    code = submit(stack, birth_registration("cli-report@example.vn"))
    wait_completed(stack, code)
    month = SYSTEM_CLOCK.now().astimezone(VIETNAM).strftime("%Y-%m")

    report = as_json(gateway(env, "report", "--month", month, "--json"))
    assert report["month"] == month
    desk_rows = [r for r in report["rows"] if r["agency_code"] == DESK]
    assert sum(r["received"] for r in desk_rows) >= 1

    csv = gateway(env, "report", "--month", month, "--csv")
    assert csv.exit_code == 0
    lines = csv.stdout.splitlines()
    assert lines[0].split(",")[:2] == ["agency_code", "procedure_code"]
    assert any(line.startswith(DESK + ",") for line in lines[1:])
    assert gateway(env, "report", "--month", "2026-13").exit_code == ExitCode.USAGE


def test_the_catalogue_is_reloaded(env: dict[str, str]) -> None:
    loaded = as_json(gateway(env, "catalogue", "reload", "--json"))
    assert loaded["version"] >= 1
    assert loaded["sha256"]
    assert as_json(gateway(env, "catalogue", "reload", "--json"))["changed"] is False


def test_maintenance_on_and_off_shows_in_health(stack: Stack, env: dict[str, str]) -> None:
    try:
        on = as_json(gateway(env, "maintenance", "on", "notify", "--reason", "SMTP move", "--json"))
        assert (on["service"], on["on"], on["reason"]) == ("notify", True, "SMTP move")
        health = as_json(gateway(env, "health", "--json"))
        assert health["notify"]["status"] == "maintenance"
        assert health["notify"]["maintenance"]["reason"] == "SMTP move"
        assert gateway(env, "health").stdout.count("SMTP move") == 1
        assert as_json(gateway(env, "maintenance", "show", "notify", "--json"))["on"] is True
    finally:
        off = gateway(env, "maintenance", "off", "notify")
    assert off.exit_code == 0, off.output
    assert "not in maintenance" in off.stdout
    assert as_json(gateway(env, "health", "--json"))["notify"]["status"] == "ok"

    desk = stack.credentials.client_for(DESK)
    not_operator = env | {"GATEWAY_CLIENT_ID": desk.client_id, "GATEWAY_CLIENT_SECRET": desk.secret}
    refused = gateway(not_operator, "maintenance", "on", "notify")
    assert refused.exit_code == ExitCode.AUTH_REFUSED
    # Anyone with a token may look.
    assert gateway(not_operator, "maintenance", "show", "notify").exit_code == 0


def test_a_dead_lettered_transfer_is_listed_and_replayed(stack: Stack, env: dict[str, str]) -> None:
    behave(stack, fail_next=1, fail_status=400)  # the agency refuses: parked at once
    try:
        code = submit(stack, birth_registration("cli-dead-letter@example.vn"))

        def listed() -> dict[str, Any] | None:
            letters = as_json(gateway(env, "dead-letters", "list", "--json"))
            return next((d for d in letters if d["dossier_code"] == code), None)

        letter = eventually(listed, timeout=60)
    finally:
        behave(stack, fail_next=0)
    assert letter["id"].startswith("transfer:")
    assert letter["kind"] == "transfer"
    assert letter["reason"] == "HTTP 400"
    assert letter["id"] in gateway(env, "dead-letters", "list").stdout

    replayed = as_json(gateway(env, "dead-letters", "replay", letter["id"], "--json"))
    assert replayed == [{"id": letter["id"], "replayed": True}]
    view = wait_completed(stack, code)
    assert view["steps"][0]["status"] == "completed"
    [record] = [t for t in agency_transfers(stack, BIRTH_AGENCY) if t["dossier_code"] == code]
    assert record["effects"] == 1

    # Replayed already: no longer a dead letter, and the exit code says it failed.
    again = gateway(env, "dead-letters", "replay", letter["id"])
    assert again.exit_code == ExitCode.FAILED
    assert "not replayed" in again.output
