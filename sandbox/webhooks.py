"""Stand-in agency system taking the gateway's webhook callbacks.

Each receiver is a name under /webhooks/ (`POST /webhooks/{name}`); it keeps what it was sent
for inspection (`GET /webhooks/{name}`) and answers as told (`PUT /webhooks/{name}/behaviour`):
a status, a Location, a body, a delay (a tarpit holds every call open). A receiver that
answers a redirect with a chatty body is how the tests show that notify neither follows
redirects nor keeps what a receiver wrote. The local stack lets notify call this path, and
only this path, of the sandbox (OUTBOUND_ALLOW).
"""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from sandbox.webhook_ledger import WebhookLedger


class BehaviourIn(BaseModel):
    status: int = Field(default=204, ge=200, le=599)
    location: str | None = None
    body: str = ""
    # Seconds before the answer: a receiver that is slow, or holds every call open.
    delay_s: float = Field(default=0.0, ge=0, le=60)


class WebhookStore:
    def __init__(self, db: sqlite3.Connection | None = None) -> None:
        # Kept in the sandbox's database: a killed sandbox still lists what it was sent.
        self.received = WebhookLedger(db)
        self.behaviour: dict[str, BehaviourIn] = {}


def webhooks_router(store: WebhookStore) -> APIRouter:
    router = APIRouter(prefix="/webhooks", tags=["webhooks"])

    @router.post("/{name}")
    async def receive(name: str, request: Request) -> Response:
        store.received.record(name, await request.body(), request.headers)
        behaviour = store.behaviour.get(name, BehaviourIn())
        if behaviour.delay_s:
            await asyncio.sleep(behaviour.delay_s)
        headers = {"Location": behaviour.location} if behaviour.location else None
        return Response(behaviour.body, status_code=behaviour.status, headers=headers)

    @router.get("/{name}")
    async def received(name: str) -> list[dict[str, Any]]:
        return store.received.received(name)

    @router.put("/{name}/behaviour")
    async def set_behaviour(name: str, body: BehaviourIn) -> dict[str, Any]:
        store.behaviour[name] = body
        return body.model_dump()

    return router
