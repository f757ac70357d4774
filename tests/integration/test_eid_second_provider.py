"""The e-ID adapter against an independent OpenID Connect provider: NAV's mock-oauth2-server
(Kotlin, Nimbus OAuth SDK), run from its Maven Central jars (`make oidc-test-jars`). The
same relying party that logs citizens in at the sandbox logs them in here, configured by
issuer, client id and secret: it is not tied to our own provider. Its issuers play provider
variants (a pairwise `sub` with the personal ID in a nested claim, eIDAS `acr`, an unmapped
`acr`, client authentication checked against the decoded id or secret), and a restart with
another key under the same kid (the issuer id) plays a rotation that keeps the kid."""

from __future__ import annotations

import base64
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


EIDAS = "http://eidas.europa.eu/LoA/"
# A client id and secret with the characters RFC 6749 §2.3.1 makes the client form-encode.
ODD_CLIENT, ODD_SECRET = "urn:gov.vn:dossier-gateway", "p+q%41:r/="
CITIZEN_CLAIMS = {"sub": CITIZEN, "name": "Nguyễn Thị Lan", "acr": "2", "aud": [CLIENT_ID]}


def _issuer(issuer_id: str, param: str, match: str, claims: dict[str, Any]) -> dict[str, Any]:
    mapping = {"requestParam": param, "match": match, "claims": claims}
    return {"issuerId": issuer_id, "tokenExpiry": 120, "requestMappings": [mapping]}


def _config(key: dict[str, Any] | None = None) -> str:
    """Issuers of one mock-oauth2-server, each a provider variant. `${clientId}` is the
    client id as the provider decoded it from the client's authentication."""
    code = ("grant_type", "authorization_code")
    pairwise = {"sub": "pairwise-7f3a9c0e", "eid": {"personal_id": CITIZEN}, "aud": [CLIENT_ID]}
    config: dict[str, Any] = {
        "interactiveLogin": False,
        "tokenCallbacks": [
            _issuer("vneid", *code, CITIZEN_CLAIMS),
            # An opaque, pairwise subject; the personal ID in a nested claim; eIDAS LoA.
            _issuer("eidas", *code, pairwise | {"acr": EIDAS + "substantial"}),
            _issuer("eidas-low", *code, pairwise | {"acr": EIDAS + "low"}),
            _issuer("gold", *code, CITIZEN_CLAIMS | {"acr": "urn:example:loa:gold"}),
            _issuer("decoded", *code, CITIZEN_CLAIMS | {"aud": ["${clientId}"]}),
            # Tokens only for the exact secret, as the provider form-decoded it.
            _issuer("post", "client_secret", ODD_SECRET, CITIZEN_CLAIMS | {"aud": [ODD_CLIENT]}),
        ],
    }
    if key is not None:
        # Whatever its own kid, the provider signs with it under the issuer id as kid.
        keys = {"initialKeys": json.dumps(key), "algorithm": "RS256"}
        config["tokenProvider"] = {"keyProvider": keys}
    return json.dumps(config)


class MockProvider:
    """One mock-oauth2-server process, started again on the same port when asked."""

    def __init__(self, folder: Path) -> None:
        (self.port,) = free_ports(1)
        self.folder = folder
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, key: dict[str, Any] | None = None) -> None:
        if not any(LIBS.glob("mock-oauth2-server-*.jar")):
            pytest.fail(f"no mock-oauth2-server jars in {LIBS}: run `make oidc-test-jars`")
        log_path = self.folder / "server.log"
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                ["java", "-cp", f"{LIBS}{os.sep}*", MAIN],
                env={**os.environ, "SERVER_PORT": str(self.port), "JSON_CONFIG": _config(key)},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        _wait_for(self.url + "/vneid/.well-known/openid-configuration", self.process, log_path)

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    provider = MockProvider(tmp_path_factory.mktemp("mock-oauth2"))
    try:
        provider.start()
        yield provider.url
    finally:
        provider.stop()


@pytest.fixture(scope="module")
def issuer(server: str) -> str:
    return server + "/vneid"


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


async def _log_in(party: RelyingParty, acr_values: str = "") -> tuple[str, LoginRequest]:
    login = LoginRequest.new()
    url = await party.authorization_url(login, acr_values)
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


async def _keys(issuer: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(trust_env=False, timeout=10) as http:
        keys: list[dict[str, Any]] = (await http.get(issuer + "/jwks")).json()["keys"]
    return keys


async def test_a_pairwise_subject_with_the_id_in_a_custom_claim_and_eidas_acr(
    server: str,
) -> None:
    client = EidClient(
        server + "/eidas", CLIENT_ID, CALLBACK, client_secret="any-secret",
        personal_id_claim="eid.personal_id",
    )  # fmt: skip
    party = RelyingParty(client)
    citizen = await party.login(*await _log_in(party, party.acr_values_for(2)))
    assert (citizen.personal_id.value, citizen.assurance_level) == (CITIZEN, 2)
    # The same provider's "low" is level 1: mapped, not guessed.
    low = RelyingParty(EidClient(**(vars(client) | {"issuer": server + "/eidas-low"})))
    assert (await low.login(*await _log_in(low))).assurance_level == 1
    # Configured for `sub`, the opaque subject is no personal ID: refused, not mistaken.
    by_sub = RelyingParty(EidClient(server + "/eidas", CLIENT_ID, CALLBACK, "any-secret"))
    with pytest.raises(EidError, match="'sub' is not a personal ID"):
        await by_sub.login(*await _log_in(by_sub))
    for used in (party, low, by_sub):
        await used.close()


async def test_an_acr_nobody_mapped_refuses_the_login(server: str) -> None:
    party = RelyingParty(EidClient(server + "/gold", CLIENT_ID, CALLBACK, "any-secret"))
    with pytest.raises(EidError, match="'urn:example:loa:gold' maps to no assurance level"):
        await party.login(*await _log_in(party))
    # Once configured, the same provider's acr is a level.
    mapped = {"urn:example:loa:gold": 2}
    configured = RelyingParty(
        EidClient(server + "/gold", CLIENT_ID, CALLBACK, "any-secret", acr_levels=mapped)
    )
    assert (await configured.login(*await _log_in(configured))).assurance_level == 2
    await party.close()
    await configured.close()


async def test_a_secret_with_reserved_characters_by_basic_and_post(server: str) -> None:
    # client_secret_basic: the provider (Nimbus) form-decodes id and secret; the token's
    # audience is the id as it decoded it, so a mangled id fails the login on `aud`.
    basic = RelyingParty(EidClient(server + "/decoded", ODD_CLIENT, CALLBACK, ODD_SECRET))
    assert (await basic.login(*await _log_in(basic))).personal_id.value == CITIZEN
    # What authlib sends by itself (raw id:secret) the provider splits at the first colon:
    # the token is for client "urn", which the relying party would refuse.
    raw = base64.b64encode(f"{ODD_CLIENT}:{ODD_SECRET}".encode()).decode()
    code, _ = await _log_in(basic)
    async with httpx.AsyncClient(trust_env=False, timeout=10) as http:
        misread = await http.post(
            server + "/decoded/token",
            data={"grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK},
            headers={"Authorization": f"Basic {raw}"},
        )
    payload = misread.json()["id_token"].split(".")[1]
    assert json.loads(base64.urlsafe_b64decode(payload + "=="))["aud"] == "urn"
    # client_secret_post: this issuer answers only for the exact secret.
    post = RelyingParty(
        EidClient(
            server + "/post", ODD_CLIENT, CALLBACK, ODD_SECRET,
            token_auth_method="client_secret_post",
        )
    )  # fmt: skip
    assert (await post.login(*await _log_in(post))).personal_id.value == CITIZEN
    await basic.close()
    await post.close()


async def test_a_rotation_that_keeps_the_kid(tmp_path: Path) -> None:
    """The provider is restarted with another key; it signs under the same kid (its issuer
    id). The relying party's cached key fails, it refetches the JWKS at once (long before
    the 300 s cache age) and the login goes through."""
    provider = MockProvider(tmp_path)
    first, second = (RSAKey.generate_key(2048, {"alg": "RS256"}) for _ in range(2))
    try:
        provider.start(first.as_dict(private=True))
        issuer = provider.url + "/vneid"
        party = RelyingParty(EidClient(issuer, CLIENT_ID, CALLBACK, "any-secret"))
        assert (await party.login(*await _log_in(party))).personal_id.value == CITIZEN
        before = await _keys(issuer)
        provider.stop()
        provider.start(second.as_dict(private=True))
        after = await _keys(issuer)
        assert [k["kid"] for k in before] == [k["kid"] for k in after] == ["vneid"]
        assert before[0]["n"] != after[0]["n"]
        assert (await party.login(*await _log_in(party))).personal_id.value == CITIZEN
        await party.close()
    finally:
        provider.stop()
