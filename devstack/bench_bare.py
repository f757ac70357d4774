"""The bare pipeline `make bench` compares the gateway with: the same payload through
FastAPI -> aiokafka -> a consumer -> HTTP POST to the agency, with no database, no outbox,
no tracing and no retries. It shows what durability and tracing cost, nothing more.

    python -m devstack.bench_bare api PORT BOOTSTRAP TOPIC
    python -m devstack.bench_bare forwarder BOOTSTRAP TOPIC AGENCY_URL
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import uvicorn
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from fastapi import FastAPI

from services.intake.schemas import DossierIn


def api(port: int, bootstrap: str, topic: str) -> None:
    producers: list[AIOKafkaProducer] = []

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        producers.append(AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5))
        await producers[0].start()
        yield
        await producers[0].stop()

    app = FastAPI(lifespan=lifespan)

    @app.post("/v1/dossiers", status_code=201)
    async def submit(body: DossierIn) -> dict[str, str]:
        code = str(uuid.uuid4())
        payload = {"code": code, **body.model_dump(mode="json", exclude_none=True)}
        # Enqueued, not awaited: the bare pipeline trades durability for speed.
        await producers[0].send(topic, json.dumps(payload).encode(), key=code.encode())
        return {"code": code}

    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        loop="uvloop",
        http="httptools",
    )


async def forwarder(bootstrap: str, topic: str, agency_url: str) -> None:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id="bare", auto_offset_reset="earliest"
    )
    await consumer.start()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as client:
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=200, max_records=500)
                posts = [
                    _post(client, agency_url, json.loads(record.value))
                    for records in batches.values()
                    for record in records
                ]
                await asyncio.gather(*posts)
        finally:
            await consumer.stop()


async def _post(client: aiohttp.ClientSession, url: str, dossier: dict[str, Any]) -> None:
    async with client.post(
        url,
        json={
            "transfer_id": dossier["code"],
            "dossier": dossier,
            "step": {"index": 0, "name": "bench", "agency_code": "bench", "due_at": ""},
            "outcome_url": "http://127.0.0.1:9/unused",
        },
    ) as response:
        if response.status >= 300:
            print(f"bare forwarder: agency answered {response.status}", file=sys.stderr)


if __name__ == "__main__":
    role, *args = sys.argv[1:]
    if role == "api":
        api(int(args[0]), args[1], args[2])
    else:
        asyncio.run(forwarder(*args))
