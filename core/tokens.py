"""A service's own access token, for its calls to other services (OAuth2 client credentials).

Fetched from identity with the service's client secret, cached and refreshed a while before
it expires, so calls carry a token without ever waiting on identity in the common case.
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import quote

import aiohttp

from core.auth import token_url
from core.settings import ServiceSettings

# Refresh this long before expiry: a token must not expire on its way to the callee.
REFRESH_MARGIN_S = 30.0
# After a failed fetch, callers fail fast for this long instead of each hitting identity.
FAILURE_PAUSE_S = 2.0


class TokenUnavailable(Exception):
    pass


class ServiceTokens:
    def __init__(
        self, url: str, client_id: str, client_secret: str, scope: str = "", timeout_s: float = 5
    ) -> None:
        self._url = url
        self._form = {"grant_type": "client_credentials"} | ({"scope": scope} if scope else {})
        # RFC 6749 §2.3.1: both parts urlencoded first (%20, not +: servers differ on +).
        basic = aiohttp.encode_basic_auth(quote(client_id, safe=""), quote(client_secret, safe=""))
        self._headers = {"Authorization": basic}
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None
        self._token = ""
        self._expires_at = 0.0
        self._failed: tuple[float, str] | None = None
        self._lock = asyncio.Lock()

    @classmethod
    def from_settings(cls, settings: ServiceSettings, scope: str = "") -> ServiceTokens:
        return cls(
            token_url(settings.auth_issuer),
            settings.auth_client_id,
            settings.auth_client_secret,
            scope,
        )

    async def token(self) -> str:
        if time.monotonic() < self._expires_at:
            return self._token
        async with self._lock:
            if time.monotonic() >= self._expires_at:
                if self._failed and time.monotonic() < self._failed[0]:
                    raise TokenUnavailable(self._failed[1])
                try:
                    await self._fetch()
                except TokenUnavailable as exc:
                    self._failed = (time.monotonic() + FAILURE_PAUSE_S, str(exc))
                    raise
                self._failed = None
        return self._token

    def forget(self) -> None:
        """Drop the cached token, e.g. after the callee refused it."""
        self._expires_at = 0.0

    async def _fetch(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        try:
            async with self._session.post(
                self._url, data=self._form, headers=self._headers
            ) as answer:
                body = await answer.json(content_type=None)
                if answer.status != 200:
                    raise TokenUnavailable(f"token endpoint answered {answer.status}: {body}")
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise TokenUnavailable(f"cannot reach the token endpoint: {exc!r}") from exc
        lifetime = float(body.get("expires_in", 60))
        self._token = str(body["access_token"])
        self._expires_at = time.monotonic() + max(lifetime - REFRESH_MARGIN_S, lifetime / 2)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
