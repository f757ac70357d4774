"""`make run` points identity at the sandbox's e-ID provider unless EID_* says otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest

from devstack.stack import EID_CLIENT_ID, Stack


@pytest.fixture(scope="module")
def var_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Demo credentials are seeded once (hashing them takes seconds).
    return tmp_path_factory.mktemp("var")


@pytest.fixture
def stack(var_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Stack:
    for name in ("EID_ISSUER", "EID_CLIENT_ID", "EID_CLIENT_SECRET", "EID_CLIENT_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    return Stack(kafka_bootstrap="127.0.0.1:9", var_dir=var_dir)


def test_by_default_identity_is_the_sandbox_providers_client(stack: Stack) -> None:
    env = stack.service_env("identity")
    assert env["EID_ISSUER"] == stack.url("sandbox") + "/oidc"
    assert env["EID_CLIENT_ID"] == EID_CLIENT_ID
    assert Path(env["EID_CLIENT_KEY_FILE"]).is_file()


def test_eid_settings_from_the_environment_win(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EID_ISSUER", "https://eid.example.vn")
    monkeypatch.setenv("EID_CLIENT_ID", "our-client")
    monkeypatch.setenv("EID_CLIENT_SECRET", "p+q%41:r")
    env = stack.service_env("identity")
    assert (env["EID_ISSUER"], env["EID_CLIENT_ID"]) == ("https://eid.example.vn", "our-client")
    assert env["EID_CLIENT_SECRET"] == "p+q%41:r"
    # The sandbox's client key would take precedence over the secret: not added.
    assert "EID_CLIENT_KEY_FILE" not in env
    assert env["EID_REDIRECT_URI"] == stack.url("identity") + "/v1/citizen/callback"


def test_one_eid_setting_from_the_environment_keeps_the_sandbox_client(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EID_REDIRECT_URI", "https://portal.example.vn/callback")
    env = stack.service_env("identity")
    assert env["EID_REDIRECT_URI"] == "https://portal.example.vn/callback"
    assert env["EID_ISSUER"] == stack.url("sandbox") + "/oidc"
