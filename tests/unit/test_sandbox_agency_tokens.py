"""Demo agencies report outcomes with an access token of their own (client credentials)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from sandbox.runner import AppServer, Sandbox, bind_socket
from sandbox.settings import SandboxSettings
from tests.unit.test_sandbox_agency import AGENCY, deliver, transfer


@dataclass
class Gateway:
    """Identity's token endpoint and routing's outcome endpoint, as the agency sees them."""

    token_requests: list[dict[str, str]] = field(default_factory=list)
    valid: set[str] = field(default_factory=set)
    outcomes: asyncio.Queue[str] = field(default_factory=asyncio.Queue)

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/oauth2/token")
        async def token(request: Request) -> dict[str, Any]:
            form = dict(parse_qsl((await request.body()).decode()))
            self.token_requests.append(form)
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


@pytest.fixture
async def gateway() -> AsyncIterator[tuple[Gateway, httpx.AsyncClient, str]]:
    fake = Gateway()
    async with AppServer(fake.app(), bind_socket("127.0.0.1", 0)) as server:
        settings = SandboxSettings(
            http_port=0,
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
