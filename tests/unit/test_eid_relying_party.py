"""The e-ID relying party: a full login against the sandbox provider over real HTTP, and
ID tokens minted here with our own keys to prove every forgery is refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from sandbox.oidc import Client, OidcSettings, create_oidc_app
from sandbox.oidc_models import contact_of
from sandbox.runner import AppServer, bind_socket
from services.identity.eid import EidClient, EidError, LoginRequest, RelyingParty

CALLBACK = "http://127.0.0.1:9/v1/citizen/callback"  # never followed: the test reads it
CITIZEN = "001090012345"
CLIENT_KEY = RSAKey.generate_key(2048, {"use": "sig", "alg": "RS256"}, auto_kid=True)
# RFC 6749 §2.3.1 form-encodes both before base64; sent raw, "%41" would arrive as "A" and
# the colon in the id would split it early.
ODD_CLIENT, ODD_SECRET = "urn:gov.vn:gateway", "p+q%41:r/="


@pytest.fixture(scope="module")
async def provider() -> AsyncIterator[AppServer]:
    sock = bind_socket("127.0.0.1", 0)
    host, port = sock.getsockname()[:2]
    clients = [
        Client("gateway", [CALLBACK], client_secret="s3cret"),
        Client("gateway-jwt", [CALLBACK], jwks={"keys": [CLIENT_KEY.as_dict(private=False)]}),
        Client(ODD_CLIENT, [CALLBACK], client_secret=ODD_SECRET),
    ]
    issuer = f"http://{host}:{port}"
    app = create_oidc_app(issuer, clients, OidcSettings(auto_login=True))
    async with AppServer(app, sock) as running:
        yield running


async def code_for(party: RelyingParty, login: LoginRequest, personal_id: str, acr: str) -> str:
    url = await party.authorization_url(login, acr_values=acr)
    query = parse_qs(urlsplit(url).query)
    assert query["code_challenge_method"] == ["S256"]
    assert query["state"] == [login.state]
    assert query["nonce"] == [login.nonce]
    async with httpx.AsyncClient(trust_env=False) as http:
        response = await http.get(f"{url}&login_hint={personal_id}")
    assert response.status_code == 302, response.text
    back = parse_qs(urlsplit(response.headers["location"]).query)
    assert back["state"] == [login.state]
    return back["code"][0]


@pytest.mark.parametrize(
    "credentials",
    [{"client_id": "gateway", "client_secret": "s3cret"},
     {"client_id": "gateway-jwt", "private_key": CLIENT_KEY.as_dict(private=True)}],
    ids=["client_secret", "private_key_jwt"],
)  # fmt: skip
async def test_login_against_the_sandbox_provider(
    provider: AppServer, credentials: dict[str, Any]
) -> None:
    party = RelyingParty(EidClient(issuer=provider.url, redirect_uri=CALLBACK, **credentials))
    login = LoginRequest.new()
    citizen = await party.login(await code_for(party, login, CITIZEN, "2"), login)
    assert citizen.personal_id.value == CITIZEN
    assert citizen.assurance_level == 2
    assert citizen.name
    await party.close()


@pytest.mark.parametrize("personal_id", ["001090012345", "079185000001"])
async def test_login_keeps_the_profile_contact(provider: AppServer, personal_id: str) -> None:
    party = RelyingParty(EidClient(provider.url, "gateway", CALLBACK, client_secret="s3cret"))
    login = LoginRequest.new()
    citizen = await party.login(await code_for(party, login, personal_id, "1"), login)
    # The second citizen has no phone in the sandbox profile: None, not a failed login.
    assert (citizen.email, citizen.phone) == contact_of(personal_id)
    await party.close()


async def test_without_contact_scopes_the_login_has_no_contact(provider: AppServer) -> None:
    client = EidClient(provider.url, "gateway", CALLBACK, "s3cret", optional_scope="")
    party = RelyingParty(client)
    login = LoginRequest.new()
    citizen = await party.login(await code_for(party, login, CITIZEN, "1"), login)
    assert citizen.personal_id.value == CITIZEN
    assert (citizen.email, citizen.phone) == (None, None)
    await party.close()


@pytest.mark.parametrize(
    ("supported", "requested"),
    [
        (["openid", "profile", "email", "phone"], "openid profile email phone"),
        (["openid", "profile"], "openid profile"),
        # Configured scopes are always asked for; only the optional ones are filtered.
        (["openid", "email"], "openid profile email"),
        # Not advertised: ask for what is configured, as discovery makes the list optional.
        (None, "openid profile email phone"),
    ],
)
async def test_only_scopes_the_provider_supports_are_requested(
    supported: list[str] | None, requested: str
) -> None:
    discovery: dict[str, Any] = {
        "issuer": ISSUER, "authorization_endpoint": ISSUER + "/authorize",
        "token_endpoint": ISSUER + "/token", "jwks_uri": ISSUER + "/jwks",
    }  # fmt: skip
    if supported is not None:
        discovery["scopes_supported"] = supported
    transport = httpx.MockTransport(lambda _: httpx.Response(200, json=discovery))
    party = RelyingParty(
        EidClient(ISSUER, "gateway", CALLBACK), httpx.AsyncClient(transport=transport)
    )
    url = await party.authorization_url(LoginRequest.new())
    assert parse_qs(urlsplit(url).query)["scope"] == [requested]
    await party.close()


async def test_acr_values_are_asked_for_as_configured() -> None:
    discovery = {
        "issuer": ISSUER, "authorization_endpoint": ISSUER + "/authorize",
        "token_endpoint": ISSUER + "/token", "jwks_uri": ISSUER + "/jwks",
    }  # fmt: skip
    transport = httpx.MockTransport(lambda _: httpx.Response(200, json=discovery))
    substantial = "http://eidas.europa.eu/LoA/substantial http://eidas.europa.eu/LoA/high"
    client = EidClient(ISSUER, "gateway", CALLBACK, acr_values={2: substantial})
    party = RelyingParty(client, httpx.AsyncClient(transport=transport))
    url = await party.authorization_url(LoginRequest.new(), party.acr_values_for(2))
    assert parse_qs(urlsplit(url).query)["acr_values"] == [substantial]
    with pytest.raises(KeyError):
        party.acr_values_for(1)
    await party.close()


async def test_a_code_and_its_nonce_work_once(provider: AppServer) -> None:
    client = EidClient(provider.url, "gateway", CALLBACK, client_secret="s3cret")
    party = RelyingParty(client)
    login = LoginRequest.new()
    code = await code_for(party, login, CITIZEN, "1")
    assert (await party.login(code, login)).assurance_level == 1
    with pytest.raises(EidError, match="refused the code"):
        await party.login(code, login)
    await party.close()


async def test_a_secret_with_reserved_characters_works(provider: AppServer) -> None:
    party = RelyingParty(EidClient(provider.url, ODD_CLIENT, CALLBACK, ODD_SECRET))
    login = LoginRequest.new()
    citizen = await party.login(await code_for(party, login, CITIZEN, "1"), login)
    assert citizen.personal_id.value == CITIZEN
    await party.close()


async def test_wrong_client_secret_is_refused(provider: AppServer) -> None:
    party = RelyingParty(EidClient(provider.url, "gateway", CALLBACK, "wrong"))
    login = LoginRequest.new()
    code = await code_for(party, login, CITIZEN, "1")
    with pytest.raises(EidError, match="invalid_client"):
        await party.login(code, login)
    await party.close()


# --- ID tokens minted here, served by a provider stand-in on httpx.MockTransport ---

ISSUER = "https://eid.example.vn"
NONCE = "n-0S6_WzA2Mj"


class MintingProvider:
    def __init__(self) -> None:
        self.keys = [RSAKey.generate_key(2048, {"alg": "RS256"}, auto_kid=True)]
        self.now = time.time()
        self.jwks_fetches = 0

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/openid-configuration"):
            return httpx.Response(200, json={
                "issuer": ISSUER, "authorization_endpoint": ISSUER + "/authorize",
                "token_endpoint": ISSUER + "/token", "jwks_uri": ISSUER + "/jwks",
            })  # fmt: skip
        self.jwks_fetches += 1
        return httpx.Response(200, json={"keys": [k.as_dict(private=False) for k in self.keys]})

    def party(self, **settings: Any) -> RelyingParty:
        http = httpx.AsyncClient(transport=httpx.MockTransport(self.handle))
        client = EidClient(ISSUER, "gateway", CALLBACK, **settings)
        return RelyingParty(client, http, clock=lambda: self.now)

    def token(self, key: Any = None, header: dict[str, Any] | None = None, **claims: Any) -> str:
        key = key or self.keys[0]
        now = int(self.now)
        payload = {"iss": ISSUER, "aud": "gateway", "sub": CITIZEN, "iat": now,
                   "exp": now + 300, "nonce": NONCE, "acr": "2"} | claims  # fmt: skip
        head = header or {"alg": "RS256", "kid": key.kid}
        return jwt.encode(head, payload, key, algorithms=[head["alg"]])


@pytest.fixture
def minting() -> MintingProvider:
    return MintingProvider()


async def test_a_well_formed_token_verifies(minting: MintingProvider) -> None:
    claims = await minting.party().verify_id_token(minting.token(), NONCE)
    assert claims["sub"] == CITIZEN


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned(token: str) -> str:
    return f"{_b64(json.dumps({'alg': 'none'}).encode())}.{token.split('.')[1]}."


def _hs256_with_public_key(m: MintingProvider) -> str:
    """HMAC keyed with the provider's public key (joserfc itself refuses to make one)."""
    header = _b64(json.dumps({"alg": "HS256", "kid": m.keys[0].kid}).encode())
    signing_input = f"{header}.{m.token().split('.')[1]}"
    secret = m.keys[0].as_pem(private=False)
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


@pytest.mark.parametrize(
    ("forge", "reason"),
    [
        # Signed by a key of ours carrying the provider's kid.
        (lambda m: m.token(RSAKey.generate_key(2048), {"alg": "RS256", "kid": m.keys[0].kid}),
         "signature"),
        (lambda m: _unsigned(m.token()), "'none' is not allowed"),
        # HS256 keyed with the provider's *public* key: the classic algorithm confusion.
        (_hs256_with_public_key, "'HS256' is not allowed"),
        (lambda m: m.token(exp=int(m.now) - 120, iat=int(m.now) - 600), "exp"),
        (lambda m: m.token(iat=int(m.now) + 3600), "iat"),
        (lambda m: m.token(aud="another-client"), "aud"),
        (lambda m: m.token(iss="https://evil.example"), "iss"),
        (lambda m: m.token(nonce="replayed-from-another-login"), "nonce"),
        (lambda m: m.token(aud=["gateway", "other"]), "azp"),
    ],
    ids=["forged-signature", "alg-none", "hs256-public-key", "expired", "issued-in-future",
         "wrong-audience", "wrong-issuer", "wrong-nonce", "several-audiences-without-azp"],
)  # fmt: skip
async def test_forged_or_foreign_tokens_are_refused(
    minting: MintingProvider, forge: Any, reason: str
) -> None:
    with pytest.raises(EidError, match=reason):
        await minting.party().verify_id_token(forge(minting), NONCE)


async def test_rotation_refetches_and_retired_keys_stop_verifying(minting: MintingProvider) -> None:
    party = minting.party()
    old = minting.keys[0]
    old_token = minting.token()
    await party.verify_id_token(old_token, NONCE)
    # Rotation with a grace period: both keys published; the new kid triggers a refetch.
    new = RSAKey.generate_key(2048, {"alg": "RS256"}, auto_kid=True)
    minting.keys = [new, old]
    minting.now += 2
    await party.verify_id_token(minting.token(new), NONCE)
    assert minting.jwks_fetches == 2
    await party.verify_id_token(minting.token(old), NONCE)  # still within the grace
    # Grace over: the provider drops the old key; once our cache ages out, it is refused.
    minting.keys = [new]
    minting.now += 301
    with pytest.raises(EidError, match="does not publish"):
        await party.verify_id_token(minting.token(old), NONCE)


async def test_symmetric_algorithms_cannot_be_configured() -> None:
    with pytest.raises(ValueError, match="asymmetric"):
        EidClient(ISSUER, "gateway", CALLBACK, algorithms=("RS256", "HS256"))
    with pytest.raises(ValueError, match="asymmetric"):
        EidClient(ISSUER, "gateway", CALLBACK, algorithms=("none",))


async def test_discovery_naming_another_issuer_is_refused(minting: MintingProvider) -> None:
    http = httpx.AsyncClient(transport=httpx.MockTransport(minting.handle))
    party = RelyingParty(EidClient(ISSUER + "/tenant", "gateway", CALLBACK), http)
    with pytest.raises(EidError, match="another issuer"):
        await party.verify_id_token(minting.token(), NONCE)


async def test_bogus_kids_cannot_make_us_hammer_the_provider(minting: MintingProvider) -> None:
    party = minting.party()
    await party.verify_id_token(minting.token(), NONCE)
    stranger = RSAKey.generate_key(2048, {"alg": "RS256"}, auto_kid=True)
    for _ in range(25):
        with pytest.raises(EidError, match="does not publish"):
            await party.verify_id_token(minting.token(stranger), NONCE)
    assert minting.jwks_fetches == 1 + 10


async def test_a_new_key_under_a_known_kid_is_fetched_at_once(minting: MintingProvider) -> None:
    party = minting.party(jwks_refetch_interval_s=30)
    old = minting.keys[0]
    await party.verify_id_token(minting.token(), NONCE)
    # The provider replaces its key and keeps the kid: the cached key fails, so the key set
    # is fetched again (long before it ages out) and the new signature verifies.
    minting.keys = [RSAKey.generate_key(2048, {"alg": "RS256", "kid": old.kid})]
    minting.now += 1
    await party.verify_id_token(minting.token(), NONCE)
    assert minting.jwks_fetches == 2
    # Forgeries under that kid fetch at most once per interval.
    forged = {"alg": "RS256", "kid": old.kid}
    for _ in range(5):
        with pytest.raises(EidError, match="signature"):
            await party.verify_id_token(minting.token(RSAKey.generate_key(2048), forged), NONCE)
    assert minting.jwks_fetches == 2
    minting.now += 31
    with pytest.raises(EidError, match="signature"):
        await party.verify_id_token(minting.token(RSAKey.generate_key(2048), forged), NONCE)
    assert minting.jwks_fetches == 3
