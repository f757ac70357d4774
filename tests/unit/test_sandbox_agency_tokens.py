"""Demo agencies report outcomes with an access token of their own (client credentials)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from sandbox.agency_tokens import AgencyTokens, TokenRefused
from sandbox.runner import AppServer, Sandbox, bind_socket
from sandbox.settings import SandboxSettings
from tests.unit.test_sandbox_agency import AGENCY, deliver, transfer


@dataclass
class Gateway:
    """Identity's token endpoint and routing's outcome endpoint, as the agency sees them."""

    token_requests: list[dict[str, str]] = field(default_factory=list)
    valid: set[str] = field(default_factory=set)
    outcomes: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    token_delay_s: float = 0.0
    # (status, Retry-After) to answer token requests with instead of a token.
    refuse_with: tuple[int, str] | None = None

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/oauth2/token", response_model=None)
        async def token(request: Request) -> dict[str, Any] | Response:
            form = dict(parse_qsl((await request.body()).decode()))
            self.token_requests.append(form)
            await asyncio.sleep(self.token_delay_s)
            if self.refuse_with:
                status, retry_after = self.refuse_with
                return JSONResponse({"title": "busy"}, status, {"Retry-After": retry_after})
            issued = f"token-{len(self.token_requests)}"
            self.valid.add(issued)
            return {"access_token": issued, "token_type": "Bearer", "expires_in": 300}

        @app.post("/outcomes/{transfer_id}")
        async def outcome(transfer_id: str, request: Request) -> Response:
            bearer = request.headers.get("authorization", "").removeprefix("Bearer ")
            if bearer not in self.valid:
                return JSONResponse({"title": "invalid token"}, 401)
            await self.outcomes.put(f"{transfer_id} {bearer}")
            return Response(status_code=200)

        return app


CLIENTS = {AGENCY: {"client_id": "so-tnmt", "client_secret": "s3cret"}}


@pytest.fixture
async def gateway() -> AsyncIterator[tuple[Gateway, httpx.AsyncClient, str]]:
    fake = Gateway()
    async with AppServer(fake.app(), bind_socket("127.0.0.1", 0)) as server:
        settings = SandboxSettings(
            http_port=0,
            registry_grpc_port=0,
            smtp_port=0,
            agency_delay_s=0.01,
            callback_timeout_s=10,
            agency_token_url=f"{server.url}/oauth2/token",
            agency_clients={AGENCY: {"client_id": "so-tnmt", "client_secret": "s3cret"}},
        )
        async with (
            Sandbox(settings) as sandbox,
            httpx.AsyncClient(base_url=sandbox.url, trust_env=False) as http,
        ):
            yield fake, http, server.url


async def test_outcomes_carry_one_reused_token_of_the_agency(
    gateway: tuple[Gateway, httpx.AsyncClient, str],
) -> None:
    fake, http, base = gateway
    await deliver(http, transfer("tr-a", base))
    assert await asyncio.wait_for(fake.outcomes.get(), 5) == "tr-a token-1"
    await deliver(http, transfer("tr-b", base))
    assert await asyncio.wait_for(fake.outcomes.get(), 5) == "tr-b token-1"
    assert fake.token_requests == [
        {
            "grant_type": "client_credentials",
            "client_id": "so-tnmt",
            "client_secret": "s3cret",
            "scope": "transfers:report",
        }
    ]


async def test_a_refused_token_is_replaced_once(
    gateway: tuple[Gateway, httpx.AsyncClient, str],
) -> None:
    fake, http, base = gateway
    await deliver(http, transfer("tr-c", base))
    assert await asyncio.wait_for(fake.outcomes.get(), 5) == "tr-c token-1"
    fake.valid.clear()  # e.g. the gateway rotated its key
    await deliver(http, transfer("tr-d", base))
    assert await asyncio.wait_for(fake.outcomes.get(), 5) == "tr-d token-2"


async def test_callbacks_waiting_for_a_token_share_one_fetch() -> None:
    fake = Gateway(token_delay_s=0.3)
    async with (
        AppServer(fake.app(), bind_socket("127.0.0.1", 0)) as server,
        aiohttp.ClientSession() as session,
    ):
        tokens = AgencyTokens(f"{server.url}/oauth2/token", CLIENTS, lambda: session)
        headers = await asyncio.gather(*(tokens.authorization(AGENCY) for _ in range(50)))
        assert len(fake.token_requests) == 1
        assert headers == [{"Authorization": "Bearer token-1"}] * 50


async def test_a_refusal_with_retry_after_is_respected_by_every_waiter() -> None:
    fake = Gateway(refuse_with=(503, "30"))
    async with (
        AppServer(fake.app(), bind_socket("127.0.0.1", 0)) as server,
        aiohttp.ClientSession() as session,
    ):
        tokens = AgencyTokens(f"{server.url}/oauth2/token", CLIENTS, lambda: session)
        for _ in range(3):
            with pytest.raises(TokenRefused):
                await tokens.authorization(AGENCY)
        assert len(fake.token_requests) == 1
