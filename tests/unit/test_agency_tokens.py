"""Identity's token endpoint: client credentials with a secret or a signed assertion."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from joserfc import jwt
from joserfc.jwk import RSAKey

from core.auth import TokenVerifier
from core.deps import install
from core.problems import install_problem_handlers
from core.storage import create_tables
from services.identity.clients import (
    OWN_CLIENT_ID,
    AgencyClient,
    ClientsError,
    hash_secret,
    load_clients,
)
from services.identity.deps import compose
from services.identity.keys import SigningKeys, generate_key, load_signing_keys
from services.identity.models import metadata
from services.identity.oauth import MAX_ASSERTION_LIFETIME_S, AgencyTokens
from services.identity.own_token import OwnToken
from services.identity.settings import IdentitySettings
from services.identity.token_api import router
from services.identity.token_guard import GuardLimits, SecretGuard
from services.identity.token_state import FailureBuckets

ISSUER = "http://127.0.0.1:8083"
TOKEN_URL = ISSUER + "/oauth2/token"
AUDIENCE = "dossier-gateway"
SECRET = "correct horse battery staple"
AGENCY_KEY = RSAKey.generate_key(2048, {"use": "sig", "alg": "RS256"}, auto_kid=True)
CLIENTS = {
    "hotich": AgencyClient(
        "hotich", "000.21.31.H22", frozenset({"transfers:report"}), secret_hash=hash_secret(SECRET)
    ),
    "motcua": AgencyClient(
        "motcua",
        "000.00.01.H22",
        frozenset({"dossiers:submit", "dossiers:read"}),
        jwks={"keys": [AGENCY_KEY.as_dict(private=False)]},
    ),
}


@pytest.fixture(scope="module")
def server() -> AgencyTokens:
    keys = SigningKeys(generate_key(), grace_s=600)
    return AgencyTokens(issuer=ISSUER, audience=AUDIENCE, clients=CLIENTS, keys=keys, ttl_s=300)


@pytest.fixture(scope="module")
def client(server: AgencyTokens, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    app = FastAPI()
    install_problem_handlers(app)
    # Throttling has its own tests (test_token_guard.py): this module fails on purpose a lot.
    generous = GuardLimits(client_failures_burst=1000, address_failures_burst=1000)
    database = tmp_path_factory.mktemp("identity") / "identity.db"
    settings = IdentitySettings(
        pseudonym_key="00" * 32, database_url=f"sqlite+aiosqlite:///{database}"
    )
    composed = compose(settings)
    guard = SecretGuard(generous, buckets=FailureBuckets(composed.sessions))
    install(app, deps=replace(composed, agency_tokens=server, secret_guard=guard))
    app.include_router(router)
    with TestClient(app, base_url=ISSUER) as test_client:
        assert test_client.portal is not None  # running: its loop is the app's
        test_client.portal.call(create_tables, composed.runtime.engine, metadata)
        yield test_client


def assertion(**overrides: Any) -> str:
    now = int(time.time())
    claims = {
        "iss": "motcua",
        "sub": "motcua",
        "aud": TOKEN_URL,
        "iat": now,
        "exp": now + 60,
        "jti": f"jti-{time.monotonic_ns()}",
    } | overrides
    return jwt.encode({"alg": "RS256", "kid": AGENCY_KEY.kid or ""}, claims, AGENCY_KEY)


def with_assertion(token: str, **form: str) -> dict[str, str]:
    return {
        "grant_type": "client_credentials",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": token,
    } | form


async def verified(server: AgencyTokens, token: str) -> Any:
    verifier = TokenVerifier(
        issuer=ISSUER, audience=AUDIENCE, static_jwks=server.keys.public_jwks()
    )
    return await verifier.verify(token)


async def test_client_secret_basic_gets_a_verifiable_token(
    client: TestClient, server: AgencyTokens
) -> None:
    answer = client.post(
        "/oauth2/token", data={"grant_type": "client_credentials"}, auth=("hotich", SECRET)
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 300
    assert body["scope"] == "transfers:report"  # no scope asked: all it may have
    assert answer.headers["cache-control"] == "no-store"
    principal = await verified(server, body["access_token"])
    assert principal.agency_code == "000.21.31.H22"
    assert principal.client_id == "hotich"
    claims = jwt.decode(body["access_token"], server.keys.current).claims
    assert {"iss", "sub", "aud", "exp", "jti", "agency", "scope"} <= set(claims)
    assert claims["exp"] - claims["iat"] == 300


def test_client_secret_post_works_too(client: TestClient) -> None:
    form = {"grant_type": "client_credentials", "client_id": "hotich", "client_secret": SECRET}
    assert client.post("/oauth2/token", data=form).status_code == 200


def test_a_wrong_secret_is_invalid_client(client: TestClient) -> None:
    answer = client.post(
        "/oauth2/token", data={"grant_type": "client_credentials"}, auth=("hotich", "guess")
    )
    assert answer.status_code == 401
    assert answer.json()["error"] == "invalid_client"


async def test_private_key_jwt_gets_a_token(client: TestClient, server: AgencyTokens) -> None:
    form = with_assertion(assertion(), scope="dossiers:submit")
    answer = client.post("/oauth2/token", data=form)
    assert answer.status_code == 200, answer.text
    principal = await verified(server, answer.json()["access_token"])
    assert principal.agency_code == "000.00.01.H22"
    assert principal.scopes == {"dossiers:submit"}


def test_a_replayed_assertion_is_refused(client: TestClient) -> None:
    once = assertion()
    assert client.post("/oauth2/token", data=with_assertion(once)).status_code == 200
    again = client.post("/oauth2/token", data=with_assertion(once))
    # 401 is for clients that authenticated with the Authorization header (RFC 6749 §5.2).
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_client"


@pytest.mark.parametrize(
    "claims",
    [
        {"aud": "http://elsewhere.example/token"},
        {"exp": int(time.time()) - 600},
        {"iss": "hotich"},
    ],
)
def test_a_bad_assertion_is_refused(client: TestClient, claims: dict[str, Any]) -> None:
    answer = client.post("/oauth2/token", data=with_assertion(assertion(**claims)))
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "invalid_client"


# Seconds from the moment the test runs, not from collection: a suite that reaches this test
# ten minutes after collecting it must not see the "no iat" assertion shrink below the limit.
@pytest.mark.parametrize(
    "lifetime",
    [
        {"iat": 0, "exp": 10 * 365 * 86400},  # ten years
        {"iat": -3600, "exp": 60},  # made an hour ago
        {"iat": None, "exp": MAX_ASSERTION_LIFETIME_S + 600},  # no iat
        {"exp": None},
    ],
)
def test_a_long_lived_assertion_is_refused(
    client: TestClient, lifetime: dict[str, int | None]
) -> None:
    now = int(time.time())
    body: dict[str, Any] = {"iss": "motcua", "sub": "motcua", "aud": TOKEN_URL, "iat": now}
    body |= {"exp": now + 60, "jti": f"long-{time.monotonic_ns()}"}
    body |= {k: None if v is None else now + v for k, v in lifetime.items()}
    body = {k: v for k, v in body.items() if v is not None}
    token = jwt.encode({"alg": "RS256", "kid": AGENCY_KEY.kid or ""}, body, AGENCY_KEY)
    answer = client.post("/oauth2/token", data=with_assertion(token))
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "invalid_client"


def test_an_assertion_of_the_full_lifetime_is_accepted(client: TestClient) -> None:
    now = int(time.time())
    token = assertion(iat=now, exp=now + MAX_ASSERTION_LIFETIME_S)
    assert client.post("/oauth2/token", data=with_assertion(token)).status_code == 200


def test_unknown_and_known_ids_get_the_same_refusal(client: TestClient) -> None:
    """Nothing in the answer tells an id that exists from one that does not."""
    form = {"grant_type": "client_credentials"}
    known = client.post("/oauth2/token", data=form, auth=("hotich", "guess-1"))
    unknown = client.post("/oauth2/token", data=form, auth=("nobody", "guess-1"))
    assert (known.status_code, known.json()) == (unknown.status_code, unknown.json())
    forged = assertion(iss="nobody", sub="nobody")
    by_unknown = client.post("/oauth2/token", data=with_assertion(forged))
    assert "does not exist" not in by_unknown.text


def test_an_assertion_signed_by_another_key_is_refused(client: TestClient) -> None:
    impostor = RSAKey.generate_key(2048, {"kid": AGENCY_KEY.kid or ""})
    now = int(time.time())
    claims = {"iss": "motcua", "sub": "motcua", "aud": TOKEN_URL, "exp": now + 60, "jti": "x1"}
    token = jwt.encode({"alg": "RS256", "kid": impostor.kid or ""}, claims, impostor)
    answer = client.post("/oauth2/token", data=with_assertion(token))
    assert answer.json()["error"] == "invalid_client"


def test_a_scope_outside_the_clients_rights_is_invalid_scope(client: TestClient) -> None:
    form = {"grant_type": "client_credentials", "scope": "transfers:report dead-letters:manage"}
    answer = client.post("/oauth2/token", data=form, auth=("hotich", SECRET))
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_scope"


def test_only_client_credentials_is_granted(client: TestClient) -> None:
    answer = client.post("/oauth2/token", data={"grant_type": "password"}, auth=("hotich", SECRET))
    assert answer.status_code == 400
    assert answer.json()["error"] == "unsupported_grant_type"


def test_metadata_and_jwks_across_a_rotation(client: TestClient, server: AgencyTokens) -> None:
    metadata = client.get("/.well-known/oauth-authorization-server").json()
    assert metadata["issuer"] == ISSUER
    assert metadata["token_endpoint"] == TOKEN_URL
    assert "private_key_jwt" in metadata["token_endpoint_auth_methods_supported"]
    assert client.get(metadata["jwks_uri"]).json()["keys"][0]["kid"] == server.keys.current.kid
    before = server.keys.current.kid
    server.keys.rotate()
    kids = [k["kid"] for k in client.get("/.well-known/jwks.json").json()["keys"]]
    assert kids == [server.keys.current.kid, before]
    assert all("d" not in k for k in client.get("/.well-known/jwks.json").json()["keys"])


def test_clients_come_from_the_catalogue_with_credentials_from_the_environment() -> None:
    clients = load_clients(env={"AGENCY_CLIENT_MOTCUA_H22_SECRET_HASH": hash_secret(SECRET)})
    assert list(clients) == ["motcua-h22"]  # the others have no credential configured
    motcua = clients["motcua-h22"]
    assert motcua.agency_code == "000.00.01.H22"
    assert "dossiers:submit" in motcua.scopes
    assert motcua.check_client_secret(SECRET)
    assert not motcua.check_client_secret(SECRET + "!")
    assert motcua.auth_methods == ("client_secret_basic", "client_secret_post")
    assert SECRET not in (motcua.secret_hash or "")


def test_a_configured_signing_key_is_used_and_replicas_cannot_go_without(tmp_path: Any) -> None:
    current, retired = generate_key(), generate_key()
    (tmp_path / "retired.pem").write_bytes(retired.as_pem(private=True))
    keys = load_signing_keys(
        current.as_pem(private=True).decode(),
        "",
        str(tmp_path / "retired.pem"),
        required=True,
        grace_s=600,
    )
    published = [k["n"] for k in keys.public_jwks()["keys"]]
    assert published == [current.as_dict()["n"], retired.as_dict()["n"]]
    with pytest.raises(RuntimeError, match="replicas"):
        load_signing_keys("", "", "", required=True, grace_s=600)


def test_a_client_asking_again_at_once_gets_the_same_token_with_less_lifetime() -> None:
    now = [1_000_000.0]
    keys = SigningKeys(generate_key(), grace_s=600)
    tokens = AgencyTokens(
        issuer=ISSUER, audience=AUDIENCE, clients=CLIENTS, keys=keys, ttl_s=300, reuse_s=10,
        clock=lambda: now[0],
    )  # fmt: skip
    hotich, motcua = CLIENTS["hotich"], CLIENTS["motcua"]
    first = tokens._bearer("client_credentials", hotich, scope="transfers:report")
    now[0] += 4
    again = tokens._bearer("client_credentials", hotich, scope="transfers:report")
    assert again["access_token"] == first["access_token"]
    assert (first["expires_in"], again["expires_in"]) == (300, 296)
    # Another client, or other scopes, never share it.
    other = tokens._bearer("client_credentials", motcua, scope="dossiers:read")
    fewer = tokens._bearer("client_credentials", motcua, scope="dossiers:submit")
    assert len({first["access_token"], other["access_token"], fewer["access_token"]}) == 3
    # Past the reuse window, a new token with its whole lifetime.
    now[0] += 7
    later = tokens._bearer("client_credentials", hotich, scope="transfers:report")
    assert later["access_token"] != first["access_token"]
    assert later["expires_in"] == 300


async def test_identity_signs_its_own_catalogue_token(server: AgencyTokens) -> None:
    own = OwnToken(server, "catalogue:read")
    token = await own.token()
    principal = await verified(server, token)
    assert (principal.client_id, principal.agency_code) == (OWN_CLIENT_ID, "GATEWAY")
    assert principal.scopes == {"catalogue:read"}
    assert await own.token() == token  # signed once a lifetime, not once a call
    own.forget()
    assert await own.token() != token  # e.g. after a key rotation


def test_no_clients_file_may_register_identitys_own_client(tmp_path: Any) -> None:
    """Else the token endpoint would issue identity's own token to whoever holds that
    entry's secret."""
    clients = tmp_path / "clients.yaml"
    clients.write_text(
        f"clients:\n  - client_id: {OWN_CLIENT_ID}\n    agency: GATEWAY\n"
        "    scopes: [catalogue:read]\n    secret_hash: ${OWN_SECRET_HASH}\n"
    )
    with pytest.raises(ClientsError, match="identity's own"):
        load_clients(clients, env={"OWN_SECRET_HASH": hash_secret(SECRET)})
