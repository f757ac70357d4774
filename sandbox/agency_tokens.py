"""How a demo agency system gets its access token: OAuth2 client credentials, plain aiohttp.

Any real agency system would do the same with its own OAuth library; the sandbox keeps no
dependency on the product. One token per agency, reused until shortly before it expires.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import aiohttp

MARGIN_S = 30.0


class TokenRefused(Exception):
    """The token endpoint answered, but not with a token."""


class AgencyTokens:
    def __init__(
        self,
        token_url: str,
        clients: Mapping[str, Mapping[str, str]],
        http: Callable[[], aiohttp.ClientSession],
    ) -> None:
        self._url = token_url
        self._clients = clients
        self._http = http
        self._tokens: dict[str, tuple[str, float]] = {}

    async def authorization(self, agency_code: str) -> dict[str, str]:
        """The Authorization header for agency_code; none if it has no credentials here."""
        client = self._clients.get(agency_code)
        if not self._url or client is None:
            return {}
        cached = self._tokens.get(agency_code)
        if cached is None or cached[1] < time.monotonic():
            cached = await self._fetch(client)
            self._tokens[agency_code] = cached
        return {"Authorization": f"Bearer {cached[0]}"}

    def forget(self, agency_code: str) -> None:
        self._tokens.pop(agency_code, None)

    async def _fetch(self, client: Mapping[str, str]) -> tuple[str, float]:
        form = {
            "grant_type": "client_credentials",
            "client_id": client["client_id"],
            "client_secret": client["client_secret"],
            "scope": "transfers:report",
        }
        timeout = aiohttp.ClientTimeout(total=10)
        async with self._http().post(self._url, data=form, timeout=timeout) as response:
            body = await response.json(content_type=None)
            if response.status != 200:
                raise TokenRefused(f"HTTP {response.status}: {body}")
        lifetime = float(body.get("expires_in", 60))
        return str(body["access_token"]), time.monotonic() + max(lifetime - MARGIN_S, 1)
