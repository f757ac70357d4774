"""The `gateway` CLI's own logic, no stack needed: where its settings come from, which exit
code each failure gets, and that it needs no service code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.client import ExitCode, exit_code_for
from cli.config import SERVICES, ConfigError, load_config
from cli.main import ServiceName, app
from devstack.stack import REPO

runner = CliRunner()
# Nothing listens on port 1: every call fails to connect.
NOWHERE = {f"GATEWAY_{s.upper()}_URL": "http://127.0.0.1:1" for s in SERVICES} | {
    "GATEWAY_CLIENT_SECRET": "s3cret"
}


@pytest.fixture(autouse=True)
def no_gateway_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The developer's own GATEWAY_* variables and config file must not leak in."""
    for name in [*NOWHERE, "GATEWAY_CLIENT_ID", "GATEWAY_TOKEN_URL", "GATEWAY_TIMEOUT_S"]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))


def test_the_file_gives_settings_and_the_environment_overrides_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    file = tmp_path / "gateway.toml"
    file.write_text(
        'client_id = "ops-h22"\nclient_secret = "from-file"\n'
        'routing_url = "https://routing.h22.example/"\nidentity_url = "https://id.h22.example"\n'
    )
    config = load_config(file)
    assert config.client_id == "ops-h22"
    assert config.url("routing") == "https://routing.h22.example"
    assert config.tokens_at == "https://id.h22.example/oauth2/token"

    monkeypatch.setenv("GATEWAY_CLIENT_SECRET", "from-env")
    monkeypatch.setenv("GATEWAY_TOKEN_URL", "https://sso.example/token")
    config = load_config(file)
    assert config.client_secret.get_secret_value() == "from-env"
    assert config.client_id == "ops-h22"
    assert config.tokens_at == "https://sso.example/token"


def test_the_default_file_is_optional_but_a_named_one_must_exist(tmp_path: Path) -> None:
    assert load_config().intake_url == "http://127.0.0.1:8080"  # no ~/.config/gateway file
    with pytest.raises(ConfigError, match="no such configuration file"):
        load_config(tmp_path / "missing.toml")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("client_id = ", "not valid TOML"),
        ('routing = "x"', "routing"),
        ("timeout_s = 0", "timeout"),
    ],
)
def test_a_broken_file_is_a_usage_error(tmp_path: Path, content: str, message: str) -> None:
    file = tmp_path / "config.toml"
    file.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_config(file)
    result = runner.invoke(app, ["--config", str(file), "health"])
    assert result.exit_code == ExitCode.USAGE


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (401, ExitCode.AUTH_REFUSED),
        (403, ExitCode.AUTH_REFUSED),
        (404, ExitCode.NOT_FOUND),
        (503, ExitCode.UNAVAILABLE),
        (504, ExitCode.UNAVAILABLE),
        (409, ExitCode.FAILED),
        (422, ExitCode.FAILED),
        (500, ExitCode.FAILED),
    ],
)
def test_exit_codes_follow_the_status(status: int, code: ExitCode) -> None:
    assert exit_code_for(status) == code


def test_the_exit_codes_are_distinct() -> None:
    assert len({int(c) for c in ExitCode}) == len(ExitCode)
    assert ExitCode.OK == 0


def test_usage_errors_exit_2() -> None:
    assert runner.invoke(app, ["report", "--month", "2026-13"], env=NOWHERE).exit_code == 2
    assert runner.invoke(app, ["dead-letters", "replay"], env=NOWHERE).exit_code == 2
    assert runner.invoke(app, ["maintenance", "on", "portal"], env=NOWHERE).exit_code == 2
    bad_id = runner.invoke(app, ["dead-letters", "replay", "nonsense"], env=NOWHERE)
    assert bad_id.exit_code == ExitCode.USAGE


def test_no_secret_is_an_auth_refusal_and_no_service_is_unavailable() -> None:
    without_secret = {k: v for k, v in NOWHERE.items() if k != "GATEWAY_CLIENT_SECRET"}
    refused = runner.invoke(app, ["dossier", "X"], env=without_secret)
    assert refused.exit_code == ExitCode.AUTH_REFUSED
    assert "GATEWAY_CLIENT_SECRET" in refused.output
    unreachable = runner.invoke(app, ["dossier", "X"], env=NOWHERE)
    assert unreachable.exit_code == ExitCode.UNAVAILABLE
    health = runner.invoke(app, ["health", "--json"], env=NOWHERE)
    assert health.exit_code == ExitCode.UNAVAILABLE


def test_service_choices_are_the_services() -> None:
    assert tuple(s.value for s in ServiceName) == SERVICES


def test_the_cli_imports_no_service_code() -> None:
    probe = (
        "import sys, cli.main; print(sorted(m for m in sys.modules if m.startswith('services')))"
    )
    found = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert found.stdout.strip() == "[]"
