"""Agency access tokens, verified offline: the one place a bearer token is checked.

Identity issues short-lived JWTs (OAuth2 client credentials) signed with its own key; every
service checks them here against identity's JWKS, fetched once and cached, so a request costs
one signature check and no network call. An unknown `kid` (identity rotated its key) triggers
a refetch, at most every few seconds so forged kids cannot make us hammer identity.

Access rights are X-Road style, agency × service: each scope names one service an agency
system may call (see SCOPES); the principal carries the agency code for the finer rules of
each API (e.g. only the agency holding a step may report it done).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, cast

import aiohttp
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from core.audit import forbidden
from core.deps import part_of
from core.openapi import ScopeRequirement
from core.problems import Problem
from core.settings import ServiceSettings

log = logging.getLogger(__name__)

DOSSIERS_SUBMIT = "dossiers:submit"
DOSSIERS_READ = "dossiers:read"
TRANSFERS_REPORT = "transfers:report"
DEAD_LETTERS_MANAGE = "dead-letters:manage"
REPORTS_READ = "reports:read"
CATALOGUE_MANAGE = "catalogue:manage"
NOTIFICATIONS_READ = "notifications:read"
WEBHOOKS_MANAGE = "webhooks:manage"
JOURNEYS_READ = "journeys:read"
CATALOGUE_READ = "catalogue:read"
CITIZEN_DATA_READ = "citizen-data:read"
MAINTENANCE_MANAGE = "maintenance:manage"
SCOPES: Mapping[str, str] = {
    DOSSIERS_SUBMIT: "intake: submit dossiers (POST /v1/dossiers)",
    DOSSIERS_READ: "intake: read dossiers the agency receives or handles a step of",
    TRANSFERS_REPORT: "routing: report the outcome of a step the agency holds",
    DEAD_LETTERS_MANAGE: "routing: list and replay dead-lettered transfers (operators)",
    REPORTS_READ: "routing: journey timelines, overdue agencies, monthly statistics, catalogue",
    CATALOGUE_MANAGE: "routing: reload the procedure catalogue and agency registry (operators)",
    NOTIFICATIONS_READ: "notify: messages sent to citizens and agencies, with their status",
    WEBHOOKS_MANAGE: "notify: the agency's own webhook subscriptions",
    JOURNEYS_READ: "routing gRPC: RoutingService.GetJourney",
    CATALOGUE_READ: "routing gRPC: CatalogueService.GetCatalogue (intake, notify, identity)",
    CITIZEN_DATA_READ: "identity gRPC: consented reads of citizen data",
    MAINTENANCE_MANAGE: "every service: turn its maintenance mode on or off (operators)",
}
# Asymmetric only: `none` and HS* (which a public key could be abused to "sign") never pass.
ALGORITHMS = ("ES256", "RS256")

Fetch = Callable[[], Awaitable[dict[str, Any]]]
Clock = Callable[[], float]


@dataclass(frozen=True)
class AgencyPrincipal:
    client_id: str
    agency_code: str
    scopes: frozenset[str]


class InvalidToken(Exception):
    """Missing, malformed, forged, expired or meant for someone else: answer 401."""


class KeysUnavailable(Exception):
    """Identity's keys could not be fetched yet: answer 503, the token may well be good."""


class TokenVerifier:
    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        fetch: Fetch | None = None,
        static_jwks: Mapping[str, Any] | None = None,
        leeway_s: float = 30,
        refresh_s: float = 300,
        min_refetch_s: float = 5,
        clock: Clock = time.monotonic,
        remembered: int = 4096,
    ) -> None:
        if (fetch is None) == (static_jwks is None):
            raise ValueError("give exactly one of fetch or static_jwks")
        self.issuer = issuer
        self._fetch = fetch
        self._leeway = int(leeway_s)
        self._refresh_s = refresh_s
        self._min_refetch_s = min_refetch_s
        self._clock = clock
        self._keys: KeySet | None = None
        self._kids: frozenset[str] = frozenset()
        self._fetched_at = -float("inf")
        self._lock = asyncio.Lock()
        # Tokens already verified, until they expire: an agency presents the same token on
        # every call for its lifetime, and the signature check is most of a request's CPU
        # here (89 µs, devstack/bench_auth.py). Keyed by the whole token, signature included.
        self._remembered = remembered
        self._verified: dict[str, tuple[AgencyPrincipal, float, str]] = {}
        self._claims = jwt.JWTClaimsRegistry(
            leeway=self._leeway,
            iss={"essential": True, "value": issuer},
            aud={"essential": True, "value": audience},
            exp={"essential": True},
            sub={"essential": True},
        )
        if static_jwks is not None:
            self._install(dict(static_jwks))

    async def verify(self, token: str) -> AgencyPrincipal:
        known = self._verified.get(token)
        if known is not None:
            principal, expires_at, kid = known
            # Still unexpired, and its key still published (a key identity withdrew takes
            # its tokens with it): the same answer as checking it again.
            # time.time: the clock joserfc checks `exp` against, so both agree.
            if time.time() < expires_at and kid in self._kids:
                await self._keys_for(kid)  # the same refresh schedule as a full check
                if kid in self._kids:
                    return principal
            self._verified.pop(token, None)  # another request may have dropped it meanwhile
        header = _header(token)
        if header.get("alg") not in ALGORITHMS:
            raise InvalidToken(f"algorithm {header.get('alg')!r} is not accepted")
        kid = str(header.get("kid", ""))
        keys = await self._keys_for(kid)
        try:
            claims = jwt.decode(token, keys, algorithms=ALGORITHMS).claims
            self._claims.validate(claims)
        except (JoseError, ValueError) as exc:
            raise InvalidToken(str(exc) or type(exc).__name__) from exc
        principal = AgencyPrincipal(
            client_id=str(claims["sub"]),
            agency_code=str(claims.get("agency", "")),
            scopes=frozenset(str(claims.get("scope", "")).split()),
        )
        self._remember(token, principal, float(claims["exp"]) + self._leeway, kid)
        return principal

    def _remember(self, token: str, principal: AgencyPrincipal, until: float, kid: str) -> None:
        if len(self._verified) >= self._remembered:
            # The oldest first (dicts keep insertion order): tokens are short-lived anyway.
            del self._verified[next(iter(self._verified))]
        self._verified[token] = (principal, until, kid)

    async def _keys_for(self, kid: str) -> KeySet:
        now = self._clock()
        stale = now - self._fetched_at > self._refresh_s
        unknown = kid not in self._kids and now - self._fetched_at > self._min_refetch_s
        if self._fetch is not None and (self._keys is None or stale or unknown):
            await self._refresh()
        if self._keys is None:
            raise KeysUnavailable("identity's signing keys are not known yet")
        if kid not in self._kids:
            raise InvalidToken("signed with an unknown key")
        return self._keys

    async def _refresh(self) -> None:
        assert self._fetch is not None
        async with self._lock:
            before = self._fetched_at
            if self._clock() - before <= self._min_refetch_s:
                return  # another request refreshed while this one waited
            self._fetched_at = self._clock()
            try:
                self._install(await self._fetch())
            except (aiohttp.ClientError, TimeoutError, ValueError, JoseError) as exc:
                # Keep the keys we have: identity being away must not log every agency out.
                log.warning("cannot fetch identity's JWKS: %r", exc)

    def _install(self, jwks: dict[str, Any]) -> None:
        keys = key_set(jwks)
        self._keys = keys
        self._kids = frozenset(str(key.kid) for key in keys.keys if key.kid)


def _header(token: str) -> dict[str, Any]:
    # Only to pick the key and refuse bad algorithms early; joserfc parses the whole token.
    # Cheaper than a second full parse (a third of the cost of a verification).
    try:
        segment = token.split(".", 1)[0]
        header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, UnicodeError) as exc:
        raise InvalidToken("malformed token") from exc
    if not isinstance(header, dict):
        raise InvalidToken("malformed token")
    return header


def http_jwks(url: str, timeout_s: float = 5) -> tuple[Fetch, Callable[[], Awaitable[None]]]:
    """A JWKS fetcher over one kept-alive aiohttp session, and the coroutine that closes it."""
    session: aiohttp.ClientSession | None = None

    async def fetch() -> dict[str, Any]:
        nonlocal session
        if session is None:
            session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s))
        async with session.get(url) as response:
            response.raise_for_status()
            body: dict[str, Any] = await response.json(content_type=None)
            return body

    async def close() -> None:
        if session is not None:
            await session.close()

    return fetch, close


@dataclass
class Verification:
    verifier: TokenVerifier
    close: Callable[[], Awaitable[None]]


def token_verifier(settings: ServiceSettings) -> Verification:
    """Per settings: identity's published JWKS, or a fixed one (tests running in-process)."""
    common: dict[str, Any] = {
        "issuer": settings.auth_issuer,
        "audience": settings.auth_audience,
        "leeway_s": settings.auth_leeway_s,
    }
    if settings.auth_jwks:
        verifier = TokenVerifier(static_jwks=json.loads(settings.auth_jwks), **common)
        return Verification(verifier, _nothing)
    fetch, close = http_jwks(settings.auth_jwks_url or jwks_url(settings.auth_issuer))
    return Verification(TokenVerifier(fetch=fetch, **common), close)


def jwks_url(issuer: str) -> str:
    return issuer.rstrip("/") + "/.well-known/jwks.json"


def token_url(issuer: str) -> str:
    return issuer.rstrip("/") + "/oauth2/token"


async def _nothing() -> None:
    return None


_bearer = HTTPBearer(auto_error=False, description="An access token from identity's /oauth2/token")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def require_scope(scope: str) -> RequireScope:
    """FastAPI dependency: the calling agency, if its token is valid and carries `scope`.

    The app must hold a TokenVerifier (core.deps.install).
    """
    return RequireScope(scope)


class RequireScope(ScopeRequirement):
    """A dependency object rather than a closure: the OpenAPI document reads its scope."""

    def __init__(self, scope: str) -> None:
        if scope not in SCOPES:
            raise ValueError(f"unknown scope {scope!r}")
        self.scope = scope

    async def __call__(self, request: Request, credentials: Credentials) -> AgencyPrincipal:
        scope = self.scope
        found = await _verified(request, credentials)
        if scope not in found.scopes:
            raise forbidden(
                found,
                action=f"{request.method} {_route_of(request)}",
                target=request.url.path,
                slug="insufficient-scope",
                title="The access token does not allow this service",
                detail=f"client {found.client_id} lacks scope {scope}",
                headers={"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{scope}"'},
                required_scope=scope,
            )
        return found


def require_token() -> Callable[..., Awaitable[AgencyPrincipal]]:
    """FastAPI dependency: the calling client, if its token is valid, whatever its scopes
    (what every client may read, such as a service's maintenance state)."""

    async def principal(request: Request, credentials: Credentials) -> AgencyPrincipal:
        return await _verified(request, credentials)

    return principal


def token_verifier_of(request: Request) -> TokenVerifier:
    """What checks agency access tokens (kept by core.http.create_app)."""
    return part_of(request.app, "token_verifier", TokenVerifier)


async def _verified(request: Request, credentials: Credentials) -> AgencyPrincipal:
    verifier = token_verifier_of(request)
    if credentials is None:
        raise _unauthorized("An access token is required", "")
    try:
        return await verifier.verify(credentials.credentials)
    except InvalidToken as exc:
        raise _unauthorized("The access token is not valid", str(exc)) from None
    except KeysUnavailable:
        raise Problem(503, "service-unavailable", "Service temporarily unavailable") from None


def _route_of(request: Request) -> str:
    # The route's template (/v1/dossiers/{code}) names the action; the path names the object.
    route = request.scope.get("route")
    return str(getattr(route, "path", request.url.path))


def _unauthorized(title: str, detail: str) -> Problem:
    challenge = 'Bearer error="invalid_token"' if detail else "Bearer"
    return Problem(401, "invalid-token", title, detail, headers={"WWW-Authenticate": challenge})


def check_scopes(scopes: Collection[str]) -> None:
    unknown = set(scopes) - set(SCOPES)
    if unknown:
        raise ValueError(f"unknown scopes {sorted(unknown)}")


def key_set(jwks: Mapping[str, Any]) -> KeySet:
    """A JWKS document as a KeySet. joserfc types the document as a TypedDict it does not
    export; the document is a peer's JSON, which import_key_set checks itself."""
    return KeySet.import_key_set(cast(Any, jwks))
