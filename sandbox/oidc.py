"""Stand-in of VNeID, the national e-ID: a real OpenID Connect provider built on authlib.

Authorization code flow only, PKCE S256, state and nonce all required; the gateway's
client authenticates at /token with client_secret_basic or private_key_jwt. ID tokens are
RS256, signed with the current key; /jwks also serves the previous key for a grace period
so tokens signed just before a rotation still verify. Citizens are the population-registry
stand-in's, so e-ID and registry agree on names. `sub` is the personal ID, as with VNeID.
A client registered for officials (the operators' console) logs in the province's officials
instead: `sub` is their user name and the `roles` claim carries their roles.
"""

from __future__ import annotations

import html
import secrets
import time
from typing import Any, ClassVar, cast
from urllib.parse import parse_qsl

from authlib.oauth2.rfc6749 import AuthorizationServer, OAuth2Request
from authlib.oauth2.rfc6749.errors import InvalidRequestError, OAuth2Error
from authlib.oauth2.rfc6749.grants import AuthorizationCodeGrant
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload
from authlib.oauth2.rfc6750 import BearerTokenGenerator
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oidc.core import UserInfo
from authlib.oidc.core.grants import OpenIDCode
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from joserfc.jwk import KeySet, RSAKey

from sandbox.oidc_models import (
    ACR_LEVELS,
    DEMO_CITIZENS,
    OFFICIALS,
    SCOPES,
    AuthorizationCode,
    Citizen,
    Client,
    Official,
    OidcSettings,
    SigningKeys,
)
from sandbox.registry import mask, residence_of


class _S256Required(CodeChallenge):  # type: ignore[misc]
    """PKCE for every client, S256 only: `plain` would leak the verifier with the challenge."""

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError("PKCE is required: missing 'code_challenge'")
        if data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("'code_challenge_method' must be S256")
        super().validate_code_challenge(grant, redirect_uri)

    def get_authorization_code_challenge(self, code: AuthorizationCode) -> str:
        return code.code_challenge

    def get_authorization_code_challenge_method(self, code: AuthorizationCode) -> str:
        return code.code_challenge_method


class _OpenIDCode(OpenIDCode):  # type: ignore[misc]
    def __init__(self, provider: Provider) -> None:
        super().__init__(require_nonce=True)
        self._provider = provider

    def exists_nonce(self, nonce: str, request: OAuth2Request) -> bool:
        # A nonce seen before is a replayed authentication request.
        return (request.payload.client_id, nonce) in self._provider.nonces

    def resolve_client_private_key(self, client: Client) -> RSAKey:
        return self._provider.keys.current

    def get_client_algorithm(self, client: Client) -> str:
        return "RS256"

    def get_encode_header(self, client: Client) -> dict[str, str]:
        # kid lets relying parties pick the right key from /jwks across rotations.
        return {"alg": "RS256", "typ": "JWT", "kid": self._provider.keys.current.kid or ""}

    def get_client_claims(self, client: Client) -> dict[str, Any]:
        now = int(time.time())
        ttl = self._provider.settings.token_ttl_s
        return {
            "iss": self._provider.issuer,
            "aud": [client.client_id],
            "iat": now,
            "exp": now + ttl,
        }

    def generate_user_info(self, user: Citizen | Official, scope: str) -> UserInfo:
        return UserInfo(user.claims(scope))


class _CodeGrant(AuthorizationCodeGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS: ClassVar[list[str]] = ["client_secret_basic", "private_key_jwt"]
    server: Provider

    def validate_authorization_request(self) -> str:
        if not self.request.payload.state:
            raise InvalidRequestError("'state' is required")
        return str(super().validate_authorization_request())

    def save_authorization_code(self, code: str, request: OAuth2Request) -> None:
        data = request.payload.data
        self.server.codes[code] = AuthorizationCode(
            code=code,
            client_id=request.client.client_id,
            redirect_uri=data.get("redirect_uri", ""),
            scope=request.client.get_allowed_scope(data.get("scope", "")),
            nonce=data["nonce"],
            code_challenge=data["code_challenge"],
            code_challenge_method=data["code_challenge_method"],
            citizen=request.user,
            expires_at=time.time() + self.server.settings.code_ttl_s,
        )
        self.server.nonces.add((request.client.client_id, data["nonce"]))

    def query_authorization_code(self, code: str, client: Client) -> AuthorizationCode | None:
        found = self.server.codes.get(code)
        if found is None or found.client_id != client.client_id or found.expires_at < time.time():
            return None
        return found

    def delete_authorization_code(self, code: AuthorizationCode) -> None:
        self.server.codes.pop(code.code, None)

    def authenticate_user(self, code: AuthorizationCode) -> Citizen | Official:
        return code.citizen


class _PrivateKeyJWT(JWTBearerClientAssertion):  # type: ignore[misc]
    CLIENT_AUTH_METHOD = "private_key_jwt"

    def __init__(self, provider: Provider) -> None:
        super().__init__()
        self._provider = provider
        self._seen: set[tuple[str, str]] = set()

    def get_audiences(self) -> list[str]:
        return [f"{self._provider.issuer}/token", self._provider.issuer]

    def validate_jti(self, claims: dict[str, Any], jti: str) -> bool:
        # A replayed client assertion must not authenticate twice.
        if (claims["sub"], jti) in self._seen:
            return False
        self._seen.add((claims["sub"], jti))
        return True

    def resolve_client_public_key(self, client: Client) -> KeySet:
        # joserfc types the document as a TypedDict it does not export; it checks it itself.
        return KeySet.import_key_set(cast(Any, client.jwks or {"keys": []}))


class _Request(OAuth2Request):  # type: ignore[misc]
    """An HTTP request already read from Starlette: authlib's API is synchronous."""

    def __init__(self, request: Request, form: dict[str, str]) -> None:
        super().__init__(request.method, str(request.url), headers=request.headers)
        self._args = dict(request.query_params)
        self._form = form
        self.payload = BasicOAuth2Payload({**self._args, **form})

    @property
    def args(self) -> dict[str, str]:
        return self._args

    @property
    def form(self) -> dict[str, str]:
        return self._form


class Provider(AuthorizationServer):  # type: ignore[misc]
    def __init__(self, issuer: str, clients: list[Client], settings: OidcSettings) -> None:
        super().__init__(scopes_supported=SCOPES)
        self.issuer = issuer.rstrip("/")
        self.settings = settings
        self.keys = SigningKeys(settings.key_grace_s)
        self.clients = {c.client_id: c for c in clients}
        self.codes: dict[str, AuthorizationCode] = {}
        self.nonces: set[tuple[str, str]] = set()
        # access token -> (citizen, expiry, granted scope)
        self.tokens: dict[str, tuple[Citizen | Official, float, str]] = {}
        self.register_grant(_CodeGrant, [_S256Required(), _OpenIDCode(self)])
        self.register_client_auth_method("private_key_jwt", _PrivateKeyJWT(self))
        generator = BearerTokenGenerator(self._new_token, expires_generator=settings.token_ttl_s)
        self.register_token_generator("default", generator)

    @staticmethod
    def _new_token(**_: Any) -> str:
        return secrets.token_urlsafe(32)

    def query_client(self, client_id: str) -> Client | None:
        return self.clients.get(client_id)

    def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
        expires_at = time.time() + self.settings.token_ttl_s
        self.tokens[token["access_token"]] = (request.user, expires_at, token.get("scope", ""))

    def create_oauth2_request(self, request: _Request) -> _Request:
        return request

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        pass

    def handle_response(self, status: int, body: Any, headers: list[tuple[str, str]]) -> Response:
        if isinstance(body, dict):
            return JSONResponse(body, status, dict(headers))
        return Response(body, status, dict(headers))

    def metadata(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.issuer}/authorize",
            "token_endpoint": f"{self.issuer}/token",
            "userinfo_endpoint": f"{self.issuer}/userinfo",
            "jwks_uri": f"{self.issuer}/jwks",
            "scopes_supported": SCOPES,
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": _CodeGrant.TOKEN_ENDPOINT_AUTH_METHODS,
            "token_endpoint_auth_signing_alg_values_supported": ["RS256"],
            "code_challenge_methods_supported": ["S256"],
            "acr_values_supported": ACR_LEVELS,
            "claims_supported": [
                *("sub", "name", "acr", "nonce", "iss", "aud", "exp", "iat"),
                *("email", "email_verified", "phone_number", "phone_number_verified"),
            ],
        }


def _hidden_fields(request: _Request) -> str:
    """The authorization request's parameters, posted back with the person chosen."""
    return "".join(
        f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
        for k, v in request.args.items()
    )


def _login_page(request: _Request) -> HTMLResponse:
    hidden = _hidden_fields(request)
    wanted = request.args.get("acr_values", "").split()
    options = "".join(
        f'<label><input type="radio" name="acr" value="{level}"'
        f"{' checked' if level == max(wanted or ['1']) else ''}> Mức {level}</label> "
        for level in ACR_LEVELS
    )
    rows = ""
    for pid in DEMO_CITIZENS:
        citizen = residence_of(pid)
        if citizen is not None:
            label = html.escape(f"{citizen.full_name} ({mask(pid)})")
            rows += f'<li><button name="personal_id" value="{pid}">{label}</button></li>'
    page = (
        '<!doctype html><html lang="vi"><meta charset="utf-8"><title>VNeID (sandbox)</title>'
        f'<h1>Đăng nhập VNeID</h1><form method="post">{hidden}<p>{options}</p>'
        f"<ul>{rows}</ul></form></html>"
    )
    return HTMLResponse(page)


def _officials_login_page(request: _Request) -> HTMLResponse:
    hidden = _hidden_fields(request)
    rows = "".join(
        f'<li><button name="username" value="{html.escape(o.username)}">'
        f"{html.escape(o.name)} ({html.escape(o.username)})</button></li>"
        for o in OFFICIALS.values()
    )
    page = (
        '<!doctype html><html lang="vi"><meta charset="utf-8"><title>Cán bộ (sandbox)</title>'
        f'<h1>Đăng nhập cán bộ</h1><form method="post">{hidden}<ul>{rows}</ul></form></html>'
    )
    return HTMLResponse(page)


def _official(provider: Provider, method: str, request: _Request) -> Official | Response:
    """The officials' login: the account chosen on the page (or named by login_hint)."""
    data = request.payload.data
    username = data.get("username") if method == "POST" else None
    if not username and provider.settings.auto_login:
        username = data.get("login_hint")
    if not username:
        return _officials_login_page(request)
    official = OFFICIALS.get(username)
    if official is None:
        return HTMLResponse("Tài khoản cán bộ không tồn tại.", 400)
    return official


def create_oidc_app(
    issuer: str, clients: list[Client], settings: OidcSettings | None = None
) -> FastAPI:
    provider = Provider(issuer, clients, settings or OidcSettings())
    app = FastAPI(title="VNeID sandbox", openapi_url=None)
    app.state.provider = provider

    async def read(request: Request) -> _Request:
        # OAuth posts are always urlencoded (RFC 6749 §4.1.3), which needs no multipart parser.
        form: dict[str, str] = {}
        if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            form = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
        return _Request(request, form)

    @app.get("/.well-known/openid-configuration")
    async def discovery() -> dict[str, Any]:
        return provider.metadata()

    @app.get("/jwks")
    async def jwks() -> dict[str, Any]:
        return provider.keys.public_jwks()

    @app.post("/keys/rotate", status_code=204)
    async def rotate() -> None:
        """Sandbox only: sign with a new key from now on; the old one stays in /jwks for
        SANDBOX_OIDC_KEY_GRACE_S, as a real provider's scheduled rotation would."""
        provider.keys.rotate()

    @app.api_route("/authorize", methods=["GET", "POST"])
    async def authorize(request: Request) -> Response:
        oauth_request = await read(request)
        try:
            grant = provider.get_consent_grant(oauth_request)
        except OAuth2Error as error:
            return cast(Response, provider.handle_error_response(oauth_request, error))
        data = oauth_request.payload.data
        client = provider.query_client(data.get("client_id", ""))
        if client is not None and client.people == "officials":
            official = _official(provider, request.method, oauth_request)
            if isinstance(official, Response):
                return official
            return cast(
                Response, provider.create_authorization_response(oauth_request, official, grant)
            )
        personal_id = data.get("personal_id") if request.method == "POST" else None
        if personal_id is None and provider.settings.auto_login:
            personal_id = data.get("login_hint")
        if personal_id is None:
            return _login_page(oauth_request)
        well_formed = len(personal_id) == 12 and personal_id.isascii() and personal_id.isdigit()
        citizen = residence_of(personal_id) if well_formed else None
        if citizen is None:
            return HTMLResponse("Số định danh không hợp lệ hoặc chưa đăng ký.", 400)
        acr = data.get("acr") or max(data.get("acr_values", "").split() or ["1"])
        user = Citizen(personal_id, citizen.full_name, acr if acr in ACR_LEVELS else "1")
        return cast(Response, provider.create_authorization_response(oauth_request, user, grant))

    @app.post("/token")
    async def token(request: Request) -> Response:
        return cast(Response, provider.create_token_response(await read(request)))

    @app.api_route("/userinfo", methods=["GET", "POST"])
    async def userinfo(request: Request) -> Response:
        scheme, _, access_token = request.headers.get("authorization", "").partition(" ")
        found = provider.tokens.get(access_token) if scheme.lower() == "bearer" else None
        if found is None or found[1] < time.time():
            challenge = {"WWW-Authenticate": 'Bearer error="invalid_token"'}
            return JSONResponse({"error": "invalid_token"}, 401, challenge)
        citizen, _, scope = found
        return JSONResponse({**citizen.claims(scope), "acr": citizen.acr})

    return app
