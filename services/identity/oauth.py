"""Identity as the OAuth2 authorization server of agency systems (authlib's server side).

Client credentials only. Clients authenticate with a secret (basic or post) or with a JWT
signed by their own key (private_key_jwt, RFC 7523; each assertion's `jti` works once, on
any replica: the token endpoint records its use in the database, token_state.py).
Access tokens are JWTs (RFC 9068 shape) signed by identity's key, checked offline by every
service with core.auth; nothing is stored per token.

Secrets are checked before authlib sees the request, by the SecretGuard (token_guard.py:
cache, throttles, a bounded hashing pool); authlib's secret methods then only accept what
the guard verified, so no scrypt hash ever runs outside that bound.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import time
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, ClassVar, cast

from authlib.oauth2.rfc6749 import AuthorizationServer, OAuth2Request
from authlib.oauth2.rfc6749.errors import InvalidClientError, InvalidScopeError
from authlib.oauth2.rfc6749.grants import ClientCredentialsGrant
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload
from authlib.oauth2.rfc6749.util import extract_basic_authorization
from authlib.oauth2.rfc6750 import BearerTokenGenerator
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from fastapi import Request
from fastapi.responses import JSONResponse, Response
from joserfc import jwt
from joserfc.jwk import KeySet

from core.auth import SCOPES, jwks_url, key_set, token_url
from services.identity.clients import KEY_METHOD, SECRET_METHODS, AgencyClient
from services.identity.keys import ALGORITHM, SigningKeys
from services.identity.token_state import UsedAssertions

# RFC 7523 §3 lets the server cap how long an assertion may live; a long-lived one is a
# reusable credential (and its jti would have to be remembered for as long).
MAX_ASSERTION_LIFETIME_S = 300
UNKNOWN_CLIENT = "The client does not exist on this server."
REPLAYED = "JWT ID is used before."


class _ClientCredentials(ClientCredentialsGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS: ClassVar[list[str]] = [*SECRET_METHODS, KEY_METHOD]

    def validate_token_request(self) -> None:
        super().validate_token_request()
        client: AgencyClient = self.request.client
        requested = (self.request.payload.scope or "").split()
        if not requested:
            # No scope asked for: everything the client may have (RFC 6749 §3.3 default).
            self.request.payload.data["scope"] = " ".join(sorted(client.scopes))
        elif not set(requested) <= client.scopes:
            outside = sorted(set(requested) - client.scopes)
            raise InvalidScopeError(f"client {client.client_id} may not have {outside}")


class _PrivateKeyJWT(JWTBearerClientAssertion):  # type: ignore[misc]
    CLIENT_AUTH_METHOD = KEY_METHOD

    def __init__(self, server: AgencyTokens) -> None:
        super().__init__(leeway=30)
        self._server = server

    def __call__(self, query_client: Any, request: TokenRequest) -> AgencyClient | None:
        asking = _ASKING.set(request)
        try:
            # authlib has no type hints: its authenticate_client returns our query_client's.
            return cast(AgencyClient | None, super().__call__(query_client, request))
        except InvalidClientError as exc:
            if exc.description == UNKNOWN_CLIENT:
                # Same answer as a known client's bad assertion: ids are not enumerable.
                raise InvalidClientError(description="The client assertion is not valid.") from None
            raise
        finally:
            _ASKING.reset(asking)

    def get_audiences(self) -> list[str]:
        return [self._server.token_endpoint, self._server.issuer]

    def verify_claims(self, claims: Mapping[str, Any]) -> None:
        exp, iat = claims.get("exp"), claims.get("iat")
        if not isinstance(exp, int | float) or not isinstance(iat, int | float | None):
            raise InvalidClientError(description="The assertion needs a numeric exp.")
        # Counted from iat, and from now (an assertion without iat must not slip through).
        if (iat is not None and exp - iat > MAX_ASSERTION_LIFETIME_S) or (
            exp - time.time() > MAX_ASSERTION_LIFETIME_S + self.leeway
        ):
            raise InvalidClientError(
                description=f"The assertion may live at most {MAX_ASSERTION_LIFETIME_S} s."
            )
        super().verify_claims(claims)

    def validate_jti(self, claims: Mapping[str, Any], jti: str) -> bool:
        # authlib asks synchronously, on the event loop: the use is recorded in the database
        # by `AgencyTokens.answer` right after, and a second use is refused there.
        request = _ASKING.get()
        request.assertion = UsedAssertion(str(claims["sub"]), str(jti), float(claims["exp"]))
        return True

    def resolve_client_public_key(self, client: AgencyClient) -> KeySet:
        return key_set(client.jwks or {"keys": []})


def _basic_secret(request: TokenRequest) -> tuple[str | None, str | None]:
    # authlib has no type hints: this is its (client_id, client_secret), each maybe None.
    return cast(tuple[str | None, str | None], extract_basic_authorization(request.headers))


def _posted_secret(request: TokenRequest) -> tuple[str | None, str | None]:
    return request.form.get("client_id"), request.form.get("client_secret")


def _guard_verified(
    extract: Callable[[TokenRequest], tuple[str | None, str | None]],
) -> Callable[[Callable[[str], AgencyClient | None], TokenRequest], AgencyClient | None]:
    """authlib's secret method, minus the hash: the guard has checked the secret already."""

    def authenticate(
        query_client: Callable[[str], AgencyClient | None], request: TokenRequest
    ) -> AgencyClient | None:
        client_id, secret = extract(request)
        if client_id and secret and request.verified_secret == (client_id, secret):
            return query_client(client_id)
        return None  # authlib answers invalid_client, the same for unknown and known ids

    return authenticate


@dataclass(frozen=True)
class Presented:
    """Who a token request says it is, before anything is verified."""

    client_id: str
    secret: str | None  # None for private_key_jwt (or no credentials at all)


def presented(request: Request, form: Mapping[str, str]) -> Presented:
    client_id, secret = extract_basic_authorization(request.headers)
    if client_id and secret:
        return Presented(client_id, secret)
    if form.get("client_id") and form.get("client_secret"):
        return Presented(form["client_id"], form["client_secret"])
    return Presented(form.get("client_id") or _assertion_subject(form), None)


def _assertion_subject(form: Mapping[str, str]) -> str:
    """The unverified `sub` of a client assertion: only a key for throttling."""
    parts = form.get("client_assertion", "").split(".")
    if len(parts) != 3 or len(parts[1]) > 8192:
        return ""
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (binascii.Error, ValueError):
        return ""
    sub = claims.get("sub") if isinstance(claims, dict) else None
    return sub if isinstance(sub, str) else ""


@dataclass(frozen=True)
class UsedAssertion:
    client_id: str
    jti: str
    expires: float  # its exp, epoch seconds


# The token request whose assertion authlib is checking: validate_jti is not given it.
_ASKING: ContextVar[TokenRequest] = ContextVar("asking")


class TokenRequest(OAuth2Request):  # type: ignore[misc]
    """A token request already read from Starlette: authlib's API is synchronous."""

    def __init__(self, request: Request, form: dict[str, str], uri: str) -> None:
        # The public URL, not the one a TLS-terminating proxy forwarded us: authlib refuses
        # plain http (except on loopback), which is right for what agencies see.
        super().__init__(request.method, uri, headers=request.headers)
        self._form = form
        self.payload = BasicOAuth2Payload(dict(form))
        # (client id, secret) once the SecretGuard has verified them.
        self.verified_secret: tuple[str, str] | None = None
        # A client assertion whose signature and claims are good, before its jti is spent.
        self.assertion: UsedAssertion | None = None

    @property
    def args(self) -> dict[str, str]:
        return {}

    @property
    def form(self) -> dict[str, str]:
        return self._form


class AgencyTokens(AuthorizationServer):  # type: ignore[misc]
    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        clients: Mapping[str, AgencyClient],
        keys: SigningKeys,
        ttl_s: int,
        reuse_s: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(scopes_supported=list(SCOPES))
        self.issuer = issuer.rstrip("/")
        self.token_endpoint = token_url(self.issuer)
        self.audience = audience
        self.clients = dict(clients)
        self.keys = keys
        self.ttl_s = ttl_s
        self._clock = clock
        self.register_grant(_ClientCredentials)
        self.register_client_auth_method(KEY_METHOD, _PrivateKeyJWT(self))
        self.register_client_auth_method("client_secret_basic", _guard_verified(_basic_secret))
        self.register_client_auth_method("client_secret_post", _guard_verified(_posted_secret))
        self._generator = BearerTokenGenerator(self._access_token, expires_generator=ttl_s)
        self.register_token_generator("default", self._bearer)
        # A token issued to the same client for the same scopes moments ago is handed out
        # again (with the lifetime it has left) instead of signing a new one: every agency's
        # token expiring at once after an outage made ~2,000 callbacks ask within seconds.
        # Per replica, on purpose: another replica signs its own token for the same client,
        # equally valid; sharing this would only save a signature.
        self.reuse_s = reuse_s
        self._recent: dict[tuple[str, str], tuple[float, dict[str, Any]]] = {}

    def _bearer(
        self,
        grant_type: str,
        client: AgencyClient,
        user: Any = None,
        scope: str | None = None,
        expires_in: int | None = None,
        include_refresh_token: bool = False,
    ) -> dict[str, Any]:
        now = self._clock()
        key = (client.client_id, scope or "")
        issued_at, token = self._recent.get(key, (-self.reuse_s - 1, {}))
        if now - issued_at > self.reuse_s:
            token = self._generator(grant_type, client, user, scope, expires_in, False)
            issued_at = now
            if self.reuse_s > 0:
                if len(self._recent) >= 10_000:  # clients × scope sets: small, but bounded
                    self._recent.clear()
                self._recent[key] = (now, token)
        answer = dict(token)
        answer["expires_in"] = max(1, int(token["expires_in"] - (now - issued_at)))
        return answer

    def _access_token(self, client: AgencyClient, grant_type: str, user: Any, scope: str) -> str:
        return self.sign(client, scope)

    def sign(self, client: AgencyClient, scope: str) -> str:
        """An access token (RFC 9068 JWT) for `client`, signed with the current key."""
        now = int(self._clock())
        claims = {
            "iss": self.issuer,
            "sub": client.client_id,
            "client_id": client.client_id,
            "agency": client.agency_code,
            "aud": self.audience,
            "scope": scope,
            "iat": now,
            "nbf": now,
            "exp": now + self.ttl_s,
            "jti": secrets.token_urlsafe(16),
        }
        key = self.keys.current
        header = {"alg": ALGORITHM, "typ": "at+jwt", "kid": key.kid or ""}
        return jwt.encode(header, claims, key, algorithms=[ALGORITHM])

    async def answer(self, request: TokenRequest, used: UsedAssertions) -> Response:
        """The token response, once a client assertion's jti is spent (on any replica)."""
        # No hashing in here (an assertion's signature check and our RS256 signature take
        # about a millisecond): on the event loop, not in an unbounded thread queue.
        response: Response = self.create_token_response(request)
        spent = request.assertion
        if spent is not None and not await used.use(spent.client_id, spent.jti, spent.expires):
            return cast(
                Response,
                self.handle_error_response(request, InvalidClientError(description=REPLAYED)),
            )
        return response

    def query_client(self, client_id: str) -> AgencyClient | None:
        return self.clients.get(client_id)

    def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
        pass  # self-contained JWTs: nothing to remember

    def create_oauth2_request(self, request: TokenRequest) -> TokenRequest:
        return request

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        pass

    def handle_response(self, status: int, body: Any, headers: list[tuple[str, str]]) -> Response:
        return JSONResponse(body, status, dict(headers))

    def metadata(self) -> dict[str, Any]:
        """RFC 8414 authorization server metadata."""
        return {
            "issuer": self.issuer,
            "token_endpoint": self.token_endpoint,
            "jwks_uri": jwks_url(self.issuer),
            "scopes_supported": list(SCOPES),
            "grant_types_supported": ["client_credentials"],
            "response_types_supported": [],
            "token_endpoint_auth_methods_supported": [*SECRET_METHODS, KEY_METHOD],
            "token_endpoint_auth_signing_alg_values_supported": ["RS256", "ES256", "PS256"],
        }
