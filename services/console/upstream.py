"""The gateway's APIs as the console reads them: with its own client-credentials token
(core.tokens), never the official's, and only after the console checked the official's role.
The console keeps nothing it reads; every page asks the services afresh."""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from core.tokens import ServiceTokens, TokenUnavailable

# Everything the console does, and nothing more (catalogue/agency_clients.yaml).
SCOPE = "reports:read dead-letters:manage notifications:read"


class UpstreamError(Exception):
    def __init__(self, service: str, status: int, detail: str) -> None:
        super().__init__(f"{service} answered {status}: {detail}")
        self.service = service
        self.status = status
        self.detail = detail


class Upstream:
    def __init__(self, services: dict[str, str], tokens: ServiceTokens, timeout_s: float) -> None:
        self.services = {name: url.rstrip("/") for name, url in services.items()}
        self.tokens = tokens
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def _call(
        self, method: str, service: str, path: str, params: dict[str, str] | None = None
    ) -> tuple[int, bytes, str]:
        url = self.services[service] + path
        for attempt in (1, 2):
            try:
                token = await self.tokens.token()
            except TokenUnavailable as exc:
                raise UpstreamError("identity", 503, str(exc)) from exc
            headers = {"Authorization": f"Bearer {token}"}
            try:
                async with self._http().request(
                    method, url, params=params, headers=headers
                ) as answer:
                    body = await answer.read()
                    kind = answer.headers.get("Content-Type", "")
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise UpstreamError(service, 503, f"unreachable: {exc!r}") from exc
            if answer.status == 401 and attempt == 1:
                # Our token expired or identity rotated its key: fetch a new one, once.
                self.tokens.forget()
                continue
            return answer.status, body, kind
        raise AssertionError("unreachable")  # the loop returns or continues once

    async def get_json(self, service: str, path: str, params: dict[str, str] | None = None) -> Any:
        status, body, _ = await self._call("GET", service, path, params)
        if status != 200:
            raise UpstreamError(service, status, body.decode(errors="replace")[:500])
        return json.loads(body)

    async def get_bytes(
        self, service: str, path: str, params: dict[str, str] | None = None
    ) -> tuple[bytes, str]:
        status, body, kind = await self._call("GET", service, path, params)
        if status != 200:
            raise UpstreamError(service, status, body.decode(errors="replace")[:500])
        return body, kind

    async def post(self, service: str, path: str) -> tuple[int, Any]:
        status, body, _ = await self._call("POST", service, path)
        try:
            return status, json.loads(body) if body else None
        except ValueError:
            return status, body.decode(errors="replace")[:500]

    async def health(self, service: str) -> tuple[int, Any]:
        """/health/ready's status and JSON body, unauthenticated (health is open)."""
        try:
            async with self._http().get(self.services[service] + "/health/ready") as answer:
                try:
                    return answer.status, await answer.json(content_type=None)
                except ValueError:
                    return answer.status, {"status": (await answer.text())[:200]}
        except (aiohttp.ClientError, TimeoutError) as exc:
            return 0, {"status": "unreachable", "error": repr(exc)}

    async def close(self) -> None:
        await self.tokens.close()
        if self._session is not None:
            await self._session.close()
            self._session = None
