"""The e-ID adapter against an independent OpenID Connect provider: NAV's mock-oauth2-server
(Kotlin, Nimbus OAuth SDK), run from its Maven Central jars (`make oidc-test-jars`). The
same relying party that logs citizens in at the sandbox logs them in here, configured only
by issuer, client id and secret: it is not tied to our own provider."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from joserfc.jwk import RSAKey

from devstack._process import free_ports
from devstack.stack import REPO
from services.identity.eid import EidClient, EidError, LoginRequest, RelyingParty

LIBS = REPO / ".cache" / "oidc-test" / "libs"
MAIN = "no.nav.security.mock.oauth2.StandaloneMockOAuth2ServerKt"
CALLBACK = "http://127.0.0.1:9/v1/citizen/callback"  # never followed: the test reads it
CITIZEN = "001090012345"
CLIENT_ID = "dossier-gateway"
CLIENT_KEY = RSAKey.generate_key(2048, {"alg": "RS256"}, auto_kid=True)


def _config() -> str:
    claims = {"sub": CITIZEN, "name": "Nguyễn Thị Lan", "acr": "2", "aud": [CLIENT_ID]}
    return json.dumps(
        {
            "interactiveLogin": False,
            "tokenCallbacks": [
                {
                    "issuerId": "vneid",
                    "tokenExpiry": 120,
                    "requestMappings": [
                        {
                            "requestParam": "grant_type",
                            "match": "authorization_code",
                            "claims": claims,
                        }
                    ],
                }
            ],
        }
    )


@pytest.fixture(scope="module")
def issuer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not any(LIBS.glob("mock-oauth2-server-*.jar")):
        pytest.fail(f"no mock-oauth2-server jars in {LIBS}: run `make oidc-test-jars`")
    (port,) = free_ports(1)
    log = (tmp_path_factory.mktemp("mock-oauth2") / "server.log").open("wb")
    process = subprocess.Popen(
        ["java", "-cp", f"{LIBS}{os.sep}*", MAIN],
        env={**os.environ, "SERVER_PORT": str(port), "JSON_CONFIG": _config()},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/vneid"
    try:
        _wait_for(url + "/.well-known/openid-configuration", process, Path(log.name))
        yield url
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _wait_for(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"mock-oauth2-server exited: {log.read_text(errors='replace')[-2000:]}")
        try:
            if httpx.get(url, timeout=1, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    pytest.fail(f"mock-oauth2-server not up within 90 s: {log.read_text(errors='replace')[-2000:]}")


async def _log_in(party: RelyingParty) -> tuple[str, LoginRequest]:
    login = LoginRequest.new()
    url = await party.authorization_url(login)
    async with httpx.AsyncClient(trust_env=False) as browser:
        response = await browser.get(url)
    assert response.status_code == 302, response.text
    back = parse_qs(urlsplit(response.headers["location"]).query)
    assert back["state"] == [login.state]
    return back["code"][0], login


@pytest.mark.parametrize(
    "credentials",
    [{"client_secret": "any-secret"}, {"private_key": CLIENT_KEY.as_dict(private=True)}],
    ids=["client_secret", "private_key_jwt"],
)
async def test_the_adapter_logs_a_citizen_in_at_another_provider(
    issuer: str, credentials: dict[str, Any]
) -> None:
    party = RelyingParty(EidClient(issuer, CLIENT_ID, CALLBACK, **credentials))
    code, login = await _log_in(party)
    citizen = await party.login(code, login)
    assert citizen.personal_id.value == CITIZEN
    assert citizen.name == "Nguyễn Thị Lan"
    assert citizen.assurance_level == 2
    await party.close()


async def test_another_providers_token_for_another_nonce_is_refused(issuer: str) -> None:
    party = RelyingParty(EidClient(issuer, CLIENT_ID, CALLBACK, client_secret="any-secret"))
    code, login = await _log_in(party)
    replayed = LoginRequest(login.state, "a-nonce-of-another-login", login.code_verifier)
    with pytest.raises(EidError, match="nonce"):
        await party.login(code, replayed)
    await party.close()
