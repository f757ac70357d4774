"""The e-ID adapter: an OpenID Connect relying party for any standards-compliant provider.

Configured by the issuer URL, a client id and the client's credentials (a secret for
client_secret_basic or client_secret_post, or a private JWK for private_key_jwt, RFC 7523),
plus what differs between providers (eid_policy.py: the personal-ID claim, the acr mapping);
endpoints and keys come from discovery. The authorization code flow always carries PKCE
S256, `state` and `nonce`. ID tokens are verified here, never trusted: signature against the
provider's JWKS (cached, refetched for an unknown `kid` and, rate-limited, when a known
`kid` fails to verify, so rotations go through), an allow-list of asymmetric algorithms,
`iss`, `aud`, `exp`/`iat` with a small skew and the `nonce` of this login.
"""

from __future__ import annotations

import base64
import json
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import httpx
from authlib.common.security import generate_token
from authlib.integrations.httpx_client import AsyncOAuth2Client
from authlib.oauth2.rfc7523 import PrivateKeyJWT
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from joserfc import jwk, jwt
from joserfc.errors import ClaimError, JoseError
from joserfc.jwk import KeySet

from core.auth import key_set
from core.personal_id import PersonalId
from services.identity.eid_policy import (
    DEFAULT_ACR_LEVELS,
    DEFAULT_ACR_VALUES,
    TOKEN_AUTH_METHODS,
    EidError,
    assurance_level,
    check_acr_levels,
    check_acr_values,
    encode_client_secret_basic,
    personal_id_from,
)

__all__ = ["EidClient", "EidError", "LoginRequest", "RelyingParty", "VerifiedCitizen"]

# Signatures a public key can verify. HS* is never accepted: with a public "secret" anyone
# could sign, and `none` is no signature at all.
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)


@dataclass(frozen=True)
class EidClient:
    issuer: str
    client_id: str
    redirect_uri: str
    client_secret: str = ""
    # A private JWK (dict) for private_key_jwt; takes precedence over the secret.
    private_key: dict[str, Any] | None = None
    scope: str = "openid profile"
    # Asked for only when the provider lists them in scopes_supported (or lists none):
    # the profile's contact details are welcome, not required.
    optional_scope: str = "email phone"
    algorithms: tuple[str, ...] = ("RS256", "PS256", "ES256")
    leeway_s: int = 60
    # The JWKS is fetched again after this, so keys the provider retired stop verifying.
    jwks_max_age_s: float = 300.0
    # Unknown kids refetch the JWKS at most this many times a minute: a rotation is seen
    # at once, a flood of tokens with bogus kids costs the provider a few requests.
    jwks_refetches_per_minute: int = 10
    # A known kid whose signature fails refetches at most once in this many seconds: a
    # provider that rotates under the same kid is followed at once, forgeries cost little.
    jwks_refetch_interval_s: float = 10.0
    # The claim with the personal ID; a dotted path reaches into nested claims.
    personal_id_claim: str = "sub"
    acr_levels: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_ACR_LEVELS))
    acr_values: Mapping[int, str] = field(default_factory=lambda: dict(DEFAULT_ACR_VALUES))
    # Empty: private_key_jwt with a private key, else client_secret_basic.
    token_auth_method: str = ""

    def __post_init__(self) -> None:
        refused = set(self.algorithms) - ASYMMETRIC_ALGORITHMS
        if refused or not self.algorithms:
            raise ValueError(f"ID-token algorithms must be asymmetric; refused {sorted(refused)}")
        if self.token_auth_method and self.token_auth_method not in TOKEN_AUTH_METHODS:
            raise ValueError(
                f"token endpoint auth method must be one of {sorted(TOKEN_AUTH_METHODS)}"
            )
        if self.auth_method == "private_key_jwt" and not self.private_key:
            raise ValueError("private_key_jwt needs the client's private JWK (EID_CLIENT_KEY_FILE)")
        if not self.personal_id_claim.strip():
            raise ValueError("the personal-ID claim must be named")
        check_acr_levels(self.acr_levels)
        check_acr_values(self.acr_values)

    @property
    def auth_method(self) -> str:
        if self.token_auth_method:
            return self.token_auth_method
        return "private_key_jwt" if self.private_key else "client_secret_basic"


@dataclass(frozen=True)
class VerifiedCitizen:
    personal_id: PersonalId
    name: str
    # VNeID assurance level from `acr`: 1 online account, 2 identity verified in person.
    assurance_level: int
    # Contact details of the e-ID profile, when the provider releases them.
    email: str | None = None
    phone: str | None = None


@dataclass(frozen=True)
class LoginRequest:
    """What the relying party keeps server-side between /login and /callback."""

    state: str
    nonce: str
    code_verifier: str

    @classmethod
    def new(cls) -> LoginRequest:
        return cls(
            state=generate_token(32), nonce=generate_token(32), code_verifier=generate_token(64)
        )


class RelyingParty:
    def __init__(
        self,
        client: EidClient,
        http: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self._http = http or httpx.AsyncClient(timeout=10, trust_env=False)
        self._clock = clock
        self._metadata: dict[str, Any] | None = None
        self._keys: KeySet | None = None
        self._keys_fetched_at = float("-inf")
        self._refetches: deque[float] = deque()
        self._refetched_after_failure_at = float("-inf")

    async def close(self) -> None:
        await self._http.aclose()

    async def metadata(self) -> dict[str, Any]:
        if self._metadata is None:
            url = self.client.issuer.rstrip("/") + "/.well-known/openid-configuration"
            found = await self._get_json(url)
            # OIDC Discovery §4.3: the document must name exactly the configured issuer.
            if found.get("issuer") != self.client.issuer:
                raise EidError("the discovery document names another issuer")
            missing = {"authorization_endpoint", "token_endpoint", "jwks_uri"} - found.keys()
            if missing:
                raise EidError(f"the discovery document lacks {sorted(missing)}")
            self._metadata = found
        return self._metadata

    async def authorization_url(self, login: LoginRequest, acr_values: str = "") -> str:
        endpoint = (await self.metadata())["authorization_endpoint"]
        params = {
            "response_type": "code",
            "client_id": self.client.client_id,
            "redirect_uri": self.client.redirect_uri,
            "scope": await self.requested_scope(),
            "state": login.state,
            "nonce": login.nonce,
            "code_challenge": create_s256_code_challenge(login.code_verifier),
            "code_challenge_method": "S256",
        }
        if acr_values:
            params["acr_values"] = acr_values
        separator = "&" if "?" in endpoint else "?"
        return f"{endpoint}{separator}{urlencode(params)}"

    def acr_values_for(self, level: int) -> str:
        """What to send as acr_values to ask for this assurance level; KeyError if none is
        configured for it."""
        return self.client.acr_values[level]

    async def requested_scope(self) -> str:
        """The configured scopes, plus the optional ones this provider supports: asking for
        a scope it does not know may fail the whole login (RFC 6749 §4.1.2.1)."""
        supported = (await self.metadata()).get("scopes_supported")
        optional = self.client.optional_scope.split()
        if isinstance(supported, list):
            optional = [scope for scope in optional if scope in supported]
        wanted = self.client.scope.split()
        return " ".join([*wanted, *(scope for scope in optional if scope not in wanted)])

    async def login(self, code: str, login: LoginRequest) -> VerifiedCitizen:
        """Exchange the code, verify the ID token for this login, read userinfo."""
        token = await self.exchange(code, login.code_verifier)
        id_token = token.get("id_token")
        if not isinstance(id_token, str):
            raise EidError("the token response carries no ID token")
        claims = await self.verify_id_token(id_token, login.nonce)
        info: dict[str, Any] = {}
        if "userinfo_endpoint" in await self.metadata() and token.get("access_token"):
            info = await self.userinfo(str(token["access_token"]))
            # OIDC Core §5.3.2: userinfo about someone else must not be used.
            if info.get("sub") != claims["sub"]:
                raise EidError("userinfo is about another subject than the ID token")
        # From the verified token, else from userinfo about the same subject; with the
        # default claim (`sub`) that is the token's subject and nothing else.
        personal_id = personal_id_from(self.client.personal_id_claim, claims, info)
        name = str(claims.get("name") or info.get("name") or "")
        return VerifiedCitizen(
            personal_id,
            name,
            assurance_level(claims.get("acr"), self.client.acr_levels),
            _claim(info, claims, "email", 320),
            _claim(info, claims, "phone_number", 32),
        )

    async def exchange(self, code: str, code_verifier: str) -> dict[str, Any]:
        endpoint = (await self.metadata())["token_endpoint"]
        method = self.client.auth_method
        key = None
        if method == "private_key_jwt" and self.client.private_key:
            key = jwk.import_key(self.client.private_key)
        oauth = AsyncOAuth2Client(
            client_id=self.client.client_id,
            client_secret=key or self.client.client_secret,
            token_endpoint_auth_method=method,
            timeout=10,
            trust_env=False,
        )
        if method == "client_secret_basic":
            oauth.register_client_auth_method((method, encode_client_secret_basic))
        if key is not None:
            alg = key.get("alg") or "RS256"
            # kid lets the provider pick our current key from the JWKS it holds for us.
            auth = PrivateKeyJWT(endpoint, headers={"kid": key.kid} if key.kid else None, alg=alg)
            oauth.register_client_auth_method(auth)
        async with oauth:
            try:
                token = await oauth.fetch_token(
                    endpoint,
                    grant_type="authorization_code",
                    code=code,
                    redirect_uri=self.client.redirect_uri,
                    code_verifier=code_verifier,
                )
            except Exception as exc:  # authlib raises OAuthError, httpx transport errors
                detail = getattr(exc, "error", "") or type(exc).__name__
                raise EidError(f"the token endpoint refused the code: {detail}") from None
        return dict(token)

    async def userinfo(self, access_token: str) -> dict[str, Any]:
        endpoint = (await self.metadata())["userinfo_endpoint"]
        return await self._get_json(endpoint, {"Authorization": f"Bearer {access_token}"})

    async def verify_id_token(self, id_token: str, nonce: str) -> dict[str, Any]:
        alg, kid = _header(id_token)
        if alg not in self.client.algorithms:
            raise EidError(f"ID-token algorithm {alg!r} is not allowed")
        keys, fetched = await self._keys_for(kid)
        try:
            token = jwt.decode(id_token, keys, algorithms=list(self.client.algorithms))
        except JoseError as exc:
            # The provider may have replaced the key behind a kid we know: look once more.
            if fetched or not self._may_refetch_after_failure():
                raise EidError(f"bad ID-token signature: {exc.error}") from None
            keys = await self._fetch_keys(kid)
            try:
                token = jwt.decode(id_token, keys, algorithms=list(self.client.algorithms))
            except JoseError as again:
                raise EidError(f"bad ID-token signature: {again.error}") from None
        registry = jwt.JWTClaimsRegistry(
            now=lambda: int(self._clock()),
            leeway=self.client.leeway_s,
            iss={"essential": True, "value": self.client.issuer},
            aud={"essential": True, "value": self.client.client_id},
            sub={"essential": True},
            exp={"essential": True},
            iat={"essential": True},
            nonce={"essential": True, "value": nonce},
        )
        try:
            registry.validate(token.claims)
        except ClaimError as exc:
            raise EidError(f"ID-token claim {exc.claim!r} refused: {exc.description}") from None
        audiences = token.claims["aud"]
        # OIDC Core §3.1.3.7: with several audiences, azp must name us.
        several = isinstance(audiences, list) and len(audiences) > 1
        if several and token.claims.get("azp") != self.client.client_id:
            raise EidError("ID token for several audiences without azp naming this client")
        return dict(token.claims)

    def _may_refetch_after_failure(self) -> bool:
        now = self._clock()
        if now - self._refetched_after_failure_at < self.client.jwks_refetch_interval_s:
            return False
        self._refetched_after_failure_at = now
        return True

    async def _keys_for(self, kid: str | None) -> tuple[KeySet, bool]:
        """The key set for `kid`, and whether it was fetched just now."""
        now = self._clock()
        stale = now - self._keys_fetched_at > self.client.jwks_max_age_s
        unknown = self._keys is None or (kid is not None and not _has_kid(self._keys, kid))
        while self._refetches and self._refetches[0] < now - 60:
            self._refetches.popleft()
        refetch_allowed = len(self._refetches) < self.client.jwks_refetches_per_minute
        if stale or (unknown and refetch_allowed):
            if not stale:
                self._refetches.append(now)
            return await self._fetch_keys(kid), True
        assert self._keys is not None
        if kid is not None and not _has_kid(self._keys, kid):
            raise EidError("the ID token is signed with a key the provider does not publish")
        return self._keys, False

    async def _fetch_keys(self, kid: str | None) -> KeySet:
        jwks_uri = (await self.metadata())["jwks_uri"]
        try:
            self._keys = key_set(await self._get_json(jwks_uri))
        except (JoseError, ValueError, KeyError, TypeError):
            raise EidError("the provider's JWKS cannot be read") from None
        self._keys_fetched_at = self._clock()
        if kid is not None and not _has_kid(self._keys, kid):
            raise EidError("the ID token is signed with a key the provider does not publish")
        return self._keys

    async def _get_json(self, url: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
        try:
            response = await self._http.get(url, headers=headers)
            response.raise_for_status()
            body = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise EidError(
                f"the e-ID provider did not answer {url}: {type(exc).__name__}"
            ) from None
        if not isinstance(body, dict):
            raise EidError(f"{url} did not answer a JSON object")
        return body


def _claim(info: dict[str, Any], claims: dict[str, Any], name: str, limit: int) -> str | None:
    """A contact claim from userinfo, else from the ID token. Absent, blank or longer than
    any real address or number is None: a missing contact, not a failed login."""
    value = info.get(name) or claims.get(name)
    if not isinstance(value, str) or not value.strip() or len(value.strip()) > limit:
        return None
    return value.strip()


def _header(token: str) -> tuple[str, str | None]:
    try:
        encoded = token.split(".", 1)[0]
        header = json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
    except ValueError:
        raise EidError("the ID token is not a compact JWS") from None
    if not isinstance(header, dict):
        raise EidError("the ID token is not a compact JWS")
    kid = header.get("kid")
    return str(header.get("alg")), str(kid) if kid is not None else None


def _has_kid(keys: KeySet, kid: str) -> bool:
    return any(key.kid == kid for key in keys.keys)
