"""The console as an OpenID Connect relying party of the officials' provider.

Authorization code flow with PKCE S256, `state` and `nonce` (authlib's httpx client); the
state, nonce and verifier travel in a signed, short-lived cookie of the browser that started
the login. The ID token is verified here against the provider's JWKS: an allow-list of
asymmetric algorithms, `iss`, `aud`, `exp`/`iat` and the login's `nonce`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx
from authlib.common.security import generate_token
from authlib.integrations.httpx_client import AsyncOAuth2Client
from joserfc import jwt
from joserfc.errors import JoseError

from core.auth import key_set

ALGORITHMS = ["RS256", "PS256", "ES256"]
# Discovery and keys are fetched again after this (a rotated provider key is followed).
METADATA_MAX_AGE_S = 300.0
LEEWAY_S = 60


class LoginFailed(Exception):
    """The provider's answer cannot log anyone in (the reason is for the log, not the page)."""


@dataclass(frozen=True)
class Login:
    url: str
    state: str
    nonce: str
    verifier: str


class RelyingParty:
    def __init__(
        self, issuer: str, client_id: str, client_secret: str, redirect_uri: str, scope: str
    ) -> None:
        self.issuer = issuer.rstrip("/")
        self.client_id = client_id
        self._secret = client_secret
        self.redirect_uri = redirect_uri
        self.scope = scope
        self._metadata: dict[str, Any] = {}
        self._jwks: dict[str, Any] = {}
        self._fetched_at = 0.0

    def _client(self) -> AsyncOAuth2Client:
        return AsyncOAuth2Client(
            client_id=self.client_id,
            client_secret=self._secret,
            scope=self.scope,
            redirect_uri=self.redirect_uri,
            code_challenge_method="S256",
            token_endpoint_auth_method="client_secret_basic",  # noqa: S106 - a method name
            timeout=10,
        )

    async def _discover(self, refresh: bool = False) -> dict[str, Any]:
        if refresh or time.monotonic() - self._fetched_at > METADATA_MAX_AGE_S:
            async with httpx.AsyncClient(timeout=10) as http:
                answer = await http.get(self.issuer + "/.well-known/openid-configuration")
                answer.raise_for_status()
                metadata = answer.json()
                keys = await http.get(metadata["jwks_uri"])
                keys.raise_for_status()
            self._metadata, self._jwks = metadata, keys.json()
            self._fetched_at = time.monotonic()
        return self._metadata

    async def start(self) -> Login:
        metadata = await self._discover()
        state, nonce, verifier = generate_token(24), generate_token(24), generate_token(64)
        async with self._client() as client:
            url, _ = client.create_authorization_url(
                metadata["authorization_endpoint"],
                state=state,
                nonce=nonce,
                code_verifier=verifier,
            )
        return Login(str(url), state, nonce, verifier)

    async def finish(self, code: str, verifier: str, nonce: str) -> dict[str, Any]:
        """Trade the code for tokens; the verified ID token's claims."""
        metadata = await self._discover()
        try:
            async with self._client() as client:
                token = await client.fetch_token(
                    metadata["token_endpoint"], code=code, code_verifier=verifier
                )
        except Exception as exc:  # authlib raises its own errors and httpx's
            raise LoginFailed(f"token request refused: {exc}") from exc
        id_token = token.get("id_token")
        if not isinstance(id_token, str):
            raise LoginFailed("no ID token in the provider's answer")
        return await self._verify(id_token, nonce)

    async def _verify(self, id_token: str, nonce: str) -> dict[str, Any]:
        try:
            decoded = jwt.decode(id_token, key_set(self._jwks), algorithms=ALGORITHMS)
        except JoseError:
            # An unknown kid: the provider rotated; fetch its keys once more.
            await self._discover(refresh=True)
            try:
                decoded = jwt.decode(id_token, key_set(self._jwks), algorithms=ALGORITHMS)
            except JoseError as exc:
                raise LoginFailed(f"ID token signature: {exc}") from exc
        claims = jwt.JWTClaimsRegistry(
            leeway=LEEWAY_S,
            iss={"essential": True, "value": self._metadata.get("issuer", self.issuer)},
            aud={"essential": True, "value": self.client_id},
            exp={"essential": True},
            iat={"essential": True},
            sub={"essential": True},
            nonce={"essential": True, "value": nonce},
        )
        try:
            claims.validate(decoded.claims)
        except JoseError as exc:
            raise LoginFailed(f"ID token claims: {exc}") from exc
        return dict(decoded.claims)
