"""A service's routes wait for what they need loaded (the schema, routing's catalogue): until
then they answer 503 problem+json with Retry-After, and readiness names what is missing.
A restarted routing once answered 500 to outcome reports that came before its catalogue."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from fastapi import Depends
from sqlalchemy import MetaData

from core.http import create_app, database_ready
from core.maintenance import maintenance_table
from core.runtime import Runtime
from core.settings import ServiceSettings


def runtime_at(tmp_path: Path) -> Runtime:
    settings = ServiceSettings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'gates.db'}", schema_wait_s=0.2
    )
    metadata = MetaData()
    maintenance_table(metadata, "gates")
    return Runtime(settings, name="gates", metadata=metadata, migrations=tmp_path)


async def test_routes_answer_503_until_every_gate_opens(tmp_path: Path) -> None:
    runtime = runtime_at(tmp_path)
    catalogue = asyncio.Event()
    runtime.add_gate("catalogue", catalogue)
    app = create_app(title="t", description="d", runtime=runtime)

    @app.get("/v1/thing", dependencies=[Depends(database_ready)])
    async def thing() -> dict[str, str]:
        return {"ok": "yes"}

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        runtime.schema_ready.set()
        closed = await client.get("/v1/thing")
        readiness = (await runtime.readiness())["catalogue"]
        catalogue.set()
        opened = await client.get("/v1/thing")

    assert closed.status_code == 503
    assert closed.headers["content-type"] == "application/problem+json"
    assert closed.headers["retry-after"] == "2"
    assert "catalogue not loaded yet" in readiness
    assert opened.status_code == 200
    await runtime.engine.dispose()


async def test_a_route_waiting_for_a_gate_is_served_once_it_opens(tmp_path: Path) -> None:
    runtime = runtime_at(tmp_path)
    runtime.schema_ready.set()
    catalogue = asyncio.Event()
    runtime.add_gate("catalogue", catalogue)
    app = create_app(title="t", description="d", runtime=runtime)

    @app.get("/v1/thing", dependencies=[Depends(database_ready)])
    async def thing() -> dict[str, str]:
        return {"ok": "yes"}

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        asyncio.get_running_loop().call_later(0.05, catalogue.set)
        answer = await client.get("/v1/thing")

    assert answer.status_code == 200
    await runtime.engine.dispose()
