"""How a demo agency system gets its access token: OAuth2 client credentials, plain aiohttp.

Any real agency system would do the same with its own OAuth library; the sandbox keeps no
dependency on the product. One token per agency, reused until shortly before it expires;
when it has expired, one fetch serves every callback waiting for it (single flight), and
a refusal with Retry-After is respected by all of them instead of retried by each.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping

import aiohttp

MARGIN_S = 30.0


class TokenRefused(Exception):
    """The token endpoint answered, but not with a token."""

    def __init__(self, reason: str, retry_after_s: float = 0.0) -> None:
        super().__init__(reason)
        self.retry_after_s = retry_after_s


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
        self._fetching: dict[str, asyncio.Task[tuple[str, float]]] = {}
        # agency -> (monotonic time until which the endpoint asked us to wait, why)
        self._paused: dict[str, tuple[float, str]] = {}

    async def authorization(self, agency_code: str) -> dict[str, str]:
        """The Authorization header for agency_code; none if it has no credentials here."""
        client = self._clients.get(agency_code)
        if not self._url or client is None:
            return {}
        cached = self._tokens.get(agency_code)
        if cached is None or cached[1] < time.monotonic():
            cached = await self._refresh(agency_code, client)
        return {"Authorization": f"Bearer {cached[0]}"}

    async def _refresh(self, agency_code: str, client: Mapping[str, str]) -> tuple[str, float]:
        paused = self._paused.get(agency_code)
        if paused and paused[0] > time.monotonic():
            raise TokenRefused(paused[1])
        fetching = self._fetching.get(agency_code)
        if fetching is None:
            fetching = asyncio.create_task(self._fetch_for(agency_code, client))
            self._fetching[agency_code] = fetching
        # Shielded: a waiter that gives up does not cancel the fetch the others wait for.
        return await asyncio.shield(fetching)

    async def _fetch_for(self, agency_code: str, client: Mapping[str, str]) -> tuple[str, float]:
        try:
            fetched = await self._fetch(client)
        except TokenRefused as refused:
            if refused.retry_after_s:
                until = time.monotonic() + refused.retry_after_s
                self._paused[agency_code] = (until, str(refused))
            raise
        finally:
            del self._fetching[agency_code]
        self._tokens[agency_code] = fetched
        return fetched

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
                retry_after = response.headers.get("Retry-After", "")
                raise TokenRefused(
                    f"HTTP {response.status}: {body}",
                    float(retry_after) if retry_after.isdigit() else 0.0,
                )
        lifetime = float(body.get("expires_in", 60))
        return str(body["access_token"]), time.monotonic() + max(lifetime - MARGIN_S, 1)
