"""The VNeID stand-in: code flow with PKCE over real HTTP, ID tokens checked against /jwks."""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

from sandbox.oidc import Client, OidcSettings, Provider, SigningKeys, create_oidc_app
from sandbox.oidc_models import contact_of
from sandbox.registry import residence_of
from sandbox.runner import AppServer, bind_socket

CALLBACK = "http://127.0.0.1:9/callback"  # never followed: the test reads the redirect
SECRET = "s3cret-of-the-gateway"
CITIZEN = "001090012345"
CLIENT_KEY = RSAKey.generate_key(2048, {"use": "sig", "alg": "RS256"}, auto_kid=True)


@pytest.fixture(scope="module")
async def server() -> AsyncIterator[AppServer]:
    sock = bind_socket("127.0.0.1", 0)
    host, port = sock.getsockname()[:2]
    clients = [
        Client("gateway", [CALLBACK], client_secret=SECRET),
        Client("gateway-jwt", [CALLBACK], jwks={"keys": [CLIENT_KEY.as_dict(private=False)]}),
        Client("console", [CALLBACK], client_secret=SECRET, people="officials"),
    ]
    app = create_oidc_app(f"http://{host}:{port}", clients, OidcSettings(auto_login=True))
    async with AppServer(app, sock) as running:
        yield running


@pytest.fixture
async def http(server: AppServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, trust_env=False) as client:
        yield client


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def authorize_params(client_id: str, challenge: str, **extra: str) -> dict[str, str]:
    return {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": CALLBACK,
        "scope": "openid profile",
        "state": secrets.token_urlsafe(8),
        "nonce": secrets.token_urlsafe(8),
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "login_hint": CITIZEN,
    } | extra


def redirect_query(response: httpx.Response) -> dict[str, str]:
    assert response.status_code == 302, response.text
    location = response.headers["location"]
    assert location.startswith(CALLBACK)
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


async def get_code(http: httpx.AsyncClient, params: dict[str, str]) -> str:
    query = redirect_query(await http.get("/authorize", params=params))
    assert query["state"] == params["state"]
    return query["code"]


def token_form(code: str, verifier: str) -> dict[str, str]:
    return {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": CALLBACK,
        "code_verifier": verifier,
    }


async def verified_claims(http: httpx.AsyncClient, id_token: str, server: AppServer) -> Any:
    keys = KeySet.import_key_set((await http.get("/jwks")).json())
    token = jwt.decode(id_token, keys, algorithms=["RS256"])
    jwt.JWTClaimsRegistry(iss={"essential": True, "value": server.url}).validate(token.claims)
    return token.claims


async def test_discovery_describes_the_provider(http: httpx.AsyncClient, server: AppServer) -> None:
    metadata = (await http.get("/.well-known/openid-configuration")).json()
    assert metadata["issuer"] == server.url
    assert metadata["jwks_uri"] == f"{server.url}/jwks"
    assert metadata["token_endpoint"] == f"{server.url}/token"
    assert metadata["code_challenge_methods_supported"] == ["S256"]
    assert set(metadata["token_endpoint_auth_methods_supported"]) == {
        "client_secret_basic",
        "private_key_jwt",
    }
    jwks = (await http.get("/jwks")).json()
    assert all("d" not in key for key in jwks["keys"]), "no private parts in /jwks"


async def test_code_flow_with_client_secret_basic(
    http: httpx.AsyncClient, server: AppServer
) -> None:
    verifier, challenge = pkce()
    params = authorize_params("gateway", challenge, acr_values="2")
    code = await get_code(http, params)

    response = await http.post("/token", data=token_form(code, verifier), auth=("gateway", SECRET))
    assert response.status_code == 200, response.text
    tokens = response.json()
    claims = await verified_claims(http, tokens["id_token"], server)
    registered = residence_of(CITIZEN)
    assert registered is not None
    assert claims["sub"] == CITIZEN
    assert claims["name"] == registered.full_name
    assert claims["acr"] == "2"
    assert claims["nonce"] == params["nonce"]
    assert claims["aud"] == ["gateway"]
    assert claims["iat"] <= time.time() < claims["exp"]

    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    info = (await http.get("/userinfo", headers=bearer)).json()
    assert info == {"sub": CITIZEN, "name": registered.full_name, "acr": "2"}

    # A code works once.
    again = await http.post("/token", data=token_form(code, verifier), auth=("gateway", SECRET))
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_grant"


@pytest.mark.parametrize("citizen", ["001090012345", "079185000001"])
async def test_email_and_phone_scopes_release_the_profile_contact(
    http: httpx.AsyncClient, citizen: str
) -> None:
    verifier, challenge = pkce()
    params = authorize_params("gateway", challenge, scope="openid profile email phone")
    code = await get_code(http, params | {"login_hint": citizen})
    response = await http.post("/token", data=token_form(code, verifier), auth=("gateway", SECRET))
    bearer = {"Authorization": f"Bearer {response.json()['access_token']}"}
    info = (await http.get("/userinfo", headers=bearer)).json()

    email, phone = contact_of(citizen)
    assert info["email"] == email
    assert info["email_verified"] is True
    # The sandbox gives some citizens no phone: then the claim is absent, not empty.
    assert info.get("phone_number") == phone
    assert ("phone_number_verified" in info) == (phone is not None)


def test_some_profiles_have_no_phone() -> None:
    assert contact_of("001090012345")[1] is not None
    assert contact_of("079185000001")[1] is None
    assert contact_of("001090012345") == contact_of("001090012345")


async def test_code_flow_with_private_key_jwt(http: httpx.AsyncClient, server: AppServer) -> None:
    verifier, challenge = pkce()
    code = await get_code(http, authorize_params("gateway-jwt", challenge))
    now = int(time.time())
    assertion = jwt.encode(
        {"alg": "RS256", "kid": CLIENT_KEY.kid or ""},
        {
            "iss": "gateway-jwt",
            "sub": "gateway-jwt",
            "aud": f"{server.url}/token",
            "jti": secrets.token_urlsafe(12),
            "iat": now,
            "exp": now + 60,
        },
        CLIENT_KEY,
    )
    form = token_form(code, verifier) | {
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": assertion,
    }
    response = await http.post("/token", data=form)
    assert response.status_code == 200, response.text
    claims = await verified_claims(http, response.json()["id_token"], server)
    assert claims["sub"] == CITIZEN
    assert claims["aud"] == ["gateway-jwt"]
    assert claims["acr"] == "1"

    # The same assertion again is a replay, whatever the code.
    code = await get_code(http, authorize_params("gateway-jwt", challenge))
    replay = await http.post("/token", data=form | {"code": code})
    assert replay.status_code in (400, 401)
    assert replay.json()["error"] == "invalid_client"


async def test_login_page_lists_citizens_and_a_click_logs_in(
    http: httpx.AsyncClient, server: AppServer
) -> None:
    verifier, challenge = pkce()
    params = authorize_params("gateway", challenge, acr_values="2")
    del params["login_hint"]
    page = await http.get("/authorize", params=params)
    assert page.status_code == 200
    registered = residence_of("079185000001")
    assert registered is not None
    assert registered.full_name in page.text
    assert "079185000001" in page.text  # the button's value
    assert 'value="2" checked' in page.text

    # What the browser posts when the citizen clicks, choosing assurance level 1.
    clicked = params | {"personal_id": "079185000001", "acr": "1"}
    code = redirect_query(await http.post("/authorize", data=clicked))["code"]
    tokens = (
        await http.post("/token", data=token_form(code, verifier), auth=("gateway", SECRET))
    ).json()
    claims = await verified_claims(http, tokens["id_token"], server)
    assert (claims["sub"], claims["acr"]) == ("079185000001", "1")


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"code_challenge": ""}, "invalid_request"),
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"nonce": ""}, "invalid_request"),
        ({"state": ""}, "invalid_request"),
    ],
)
async def test_authorization_requests_missing_protections_are_refused(
    http: httpx.AsyncClient, change: dict[str, str], error: str
) -> None:
    _, challenge = pkce()
    params = {k: v for k, v in (authorize_params("gateway", challenge) | change).items() if v}
    response = await http.get("/authorize", params=params)
    if params.get("state"):
        assert redirect_query(response)["error"] == error
    else:
        assert response.status_code in (302, 400)
        assert "code=" not in response.headers.get("location", "")


async def test_wrong_verifier_secret_or_token_are_refused(http: httpx.AsyncClient) -> None:
    verifier, challenge = pkce()
    code = await get_code(http, authorize_params("gateway", challenge))
    wrong_secret = await http.post(
        "/token", data=token_form(code, verifier), auth=("gateway", "guess")
    )
    assert wrong_secret.json()["error"] == "invalid_client"
    other_verifier, _ = pkce()
    wrong_verifier = await http.post(
        "/token", data=token_form(code, other_verifier), auth=("gateway", SECRET)
    )
    assert wrong_verifier.json()["error"] == "invalid_grant"
    assert (
        await http.get("/userinfo", headers={"Authorization": "Bearer nope"})
    ).status_code == 401


async def test_rotation_keeps_the_previous_key_for_the_grace_period(
    http: httpx.AsyncClient, server: AppServer
) -> None:
    provider: Provider = server.app.state.provider
    verifier, challenge = pkce()
    code = await get_code(http, authorize_params("gateway", challenge))
    before = (
        await http.post("/token", data=token_form(code, verifier), auth=("gateway", SECRET))
    ).json()["id_token"]
    old_kid = provider.keys.current.kid

    provider.keys.rotate()

    kids = [key["kid"] for key in (await http.get("/jwks")).json()["keys"]]
    assert kids == [provider.keys.current.kid, old_kid]
    assert (await verified_claims(http, before, server))["sub"] == CITIZEN


def test_retired_key_leaves_the_jwks_after_the_grace_period() -> None:
    keys = SigningKeys(grace_s=0.0)
    old_kid = keys.current.kid
    keys.rotate()
    assert [key["kid"] for key in keys.public_jwks()["keys"]] == [keys.current.kid]
    assert keys.current.kid != old_kid


async def test_a_client_for_officials_logs_in_officials_with_their_roles(
    http: httpx.AsyncClient, server: AppServer
) -> None:
    page = await http.get(
        "/authorize", params=authorize_params("console", pkce()[1], login_hint="")
    )
    assert page.status_code == 200
    assert 'value="canbo.vanhanh"' in page.text
    assert CITIZEN not in page.text  # citizens do not log in to the officials' client

    for username, roles in (("canbo.vanhanh", ["operator"]), ("canbo.tiepnhan", ["reception"])):
        verifier, challenge = pkce()
        code = await get_code(http, authorize_params("console", challenge, login_hint=username))
        answer = await http.post(
            "/token", data=token_form(code, verifier), auth=("console", SECRET)
        )
        assert answer.status_code == 200, answer.text
        claims = await verified_claims(http, answer.json()["id_token"], server)
        assert claims["sub"] == username
        assert claims["roles"] == roles
        assert claims["aud"] == ["console"]

    unknown = await http.get(
        "/authorize", params=authorize_params("console", pkce()[1], login_hint=CITIZEN)
    )
    assert unknown.status_code == 400
