"""core.tokens: a service's own token, fetched once, refreshed before expiry."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from core.tokens import ServiceTokens, TokenUnavailable
from sandbox.runner import AppServer, bind_socket


class Identity:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []
        self.lifetime = 300
        self.up = True
        self.app = FastAPI()
        self.app.post("/oauth2/token")(self.token)

    async def token(self, request: Request) -> JSONResponse:
        if not self.up:
            return JSONResponse({"error": "temporarily_unavailable"}, 503)
        scheme, _, encoded = request.headers["authorization"].partition(" ")
        assert scheme == "Basic"
        self.requests.append((base64.b64decode(encoded).decode(), (await request.body()).decode()))
        body = {"access_token": f"t{len(self.requests)}", "expires_in": self.lifetime}
        return JSONResponse(body | {"token_type": "Bearer"})


@pytest.fixture
async def identity() -> AsyncIterator[tuple[Identity, str]]:
    fake = Identity()
    async with AppServer(fake.app, bind_socket("127.0.0.1", 0)) as server:
        yield fake, f"{server.url}/oauth2/token"


async def tokens_of(url: str) -> ServiceTokens:
    return ServiceTokens(url, "gateway-intake", "s3cret:with/odd chars", "journeys:read")


async def test_one_token_is_reused_until_shortly_before_it_expires(
    identity: tuple[Identity, str],
) -> None:
    fake, url = identity
    tokens = await tokens_of(url)
    try:
        assert [await tokens.token() for _ in range(3)] == ["t1"] * 3
        # Client id and secret are urlencoded inside Basic (RFC 6749 §2.3.1).
        assert fake.requests == [
            (
                "gateway-intake:s3cret%3Awith%2Fodd%20chars",
                "grant_type=client_credentials&scope=journeys%3Aread",
            )
        ]
        fake.lifetime = 20  # shorter than the refresh margin: refreshed at half-life
        tokens.forget()
        assert await tokens.token() == "t2"
    finally:
        await tokens.close()


async def test_identity_down_fails_fast_then_recovers(identity: tuple[Identity, str]) -> None:
    fake, url = identity
    fake.up = False
    tokens = await tokens_of(url)
    try:
        with pytest.raises(TokenUnavailable, match="503"):
            await tokens.token()
        fake.up = True
        with pytest.raises(TokenUnavailable):  # within the pause: identity is not asked
            await tokens.token()
        assert fake.requests == []
    finally:
        await tokens.close()
