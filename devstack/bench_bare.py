"""The bare pipeline `make bench` compares the gateway with. It takes the gateway's hops, in
processes of the same shape, and nothing else: no database, outbox, auth, signatures,
tracing or retries. So gateway/bare says what durability, security and tracing cost.

    submit   bare-api     HTTP POST /v1/dossiers -> Kafka (submitted)
    route    bare-router  Kafka -> HTTP POST to the agency -> Kafka (routed); the agency's
                          acknowledgement and outcome come back over HTTP -> Kafka
                          (completed); every event pushed to the national portal over HTTP
    notify   bare-notify  Kafka -> one email per event (received, routed, completed) over SMTP

The agency, the portal and the mail server are the sandbox's, as for the gateway.

    python -m devstack.bench_bare api PORT BOOTSTRAP TOPIC
    python -m devstack.bench_bare router PORT BOOTSTRAP TOPIC AGENCY_URL PORTAL_URL
    python -m devstack.bench_bare notify BOOTSTRAP TOPIC SMTP_PORT
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

import aiohttp
import aiosmtplib
import uvicorn
import uvloop
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from fastapi import FastAPI, Response

from services.intake.schemas import DossierIn

HOST = "127.0.0.1"
# The wording of the gateway's mails (services/notify/templates.py), so the bench finds the
# dossier's code and the event in either pipeline's subjects the same way.
SUBJECTS = {
    "submitted": "Hồ sơ {code} đã được tiếp nhận",
    "routed": "Hồ sơ {code} đã được chuyển đến cơ quan giải quyết",
    "completed": "Hồ sơ {code} đã được giải quyết xong",
}


def _encode(event: dict[str, Any]) -> bytes:
    return json.dumps(event, ensure_ascii=False).encode()


def _serve(app: FastAPI, port: int) -> None:
    # As the services are served (core/serve.py): uvloop and httptools.
    uvicorn.run(
        app,
        host=HOST,
        port=port,
        log_level="warning",
        access_log=False,
        loop="uvloop",
        http="httptools",
    )


def _producer_lifespan(
    bootstrap: str, producers: list[AIOKafkaProducer]
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
        await producer.start()
        producers.append(producer)
        try:
            yield
        finally:
            await producer.stop()

    return lifespan


def api(port: int, bootstrap: str, topic: str) -> None:
    producers: list[AIOKafkaProducer] = []
    app = FastAPI(lifespan=_producer_lifespan(bootstrap, producers))

    @app.post("/v1/dossiers", status_code=201)
    async def submit(body: DossierIn) -> dict[str, str]:
        code = uuid.uuid4().hex[:16]
        event = {
            "type": "submitted",
            "code": code,
            **body.model_dump(mode="json", exclude_none=True),
        }
        # Enqueued, not awaited: the bare pipeline trades durability for speed.
        await producers[0].send(topic, _encode(event), key=code.encode())
        return {"code": code}

    _serve(app, port)


def router(port: int, bootstrap: str, topic: str, agency_url: str, portal_url: str) -> None:
    producers: list[AIOKafkaProducer] = []
    own_url = f"http://{HOST}:{port}"
    producer_lifespan = _producer_lifespan(bootstrap, producers)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with producer_lifespan(app):
            route = Route(producers[0], topic, agency_url, own_url, portal_url)
            task = asyncio.create_task(_consume(bootstrap, route))
            try:
                yield
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    app = FastAPI(lifespan=lifespan)

    @app.post("/v1/transfers/{code}/acknowledgement", status_code=204)
    async def acknowledged(code: str) -> Response:
        return Response(status_code=204)

    @app.post("/v1/transfers/{code}/outcome", status_code=204)
    async def outcome(code: str, body: dict[str, Any]) -> Response:
        event = {"type": "completed", "code": code, "outcome": body.get("outcome", "")}
        await producers[0].send(topic, _encode(event), key=code.encode())
        return Response(status_code=204)

    _serve(app, port)


@dataclass(frozen=True)
class Route:
    producer: AIOKafkaProducer
    topic: str
    agency_url: str
    own_url: str
    portal_url: str

    async def handle(self, client: aiohttp.ClientSession, event: dict[str, Any]) -> None:
        code = event["code"]
        if event["type"] == "submitted":
            transfer = {
                "transfer_id": code,
                "dossier": event,
                "step": {"index": 0, "name": "bench", "agency_code": "bench", "due_at": ""},
                "acknowledgement_url": f"{self.own_url}/v1/transfers/{code}/acknowledgement",
                "outcome_url": f"{self.own_url}/v1/transfers/{code}/outcome",
            }
            await _post(client, self.agency_url, transfer, {})
            routed = {"type": "routed", "code": code}
            await self.producer.send(self.topic, _encode(routed), key=code.encode())
        # Each status change of a dossier, to the national portal (as routing's portal sync).
        fields = {"MaHoSo": code, "TrangThaiHoSo": event["type"]}
        await _post(client, self.portal_url, fields, {"Idempotency-Key": f"{code}.{event['type']}"})


async def _consume(bootstrap: str, route: Route) -> None:
    consumer = AIOKafkaConsumer(
        route.topic,
        bootstrap_servers=bootstrap,
        group_id="bare-router",
        auto_offset_reset="earliest",
    )
    await consumer.start()
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as client:
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=200, max_records=500)
                events = [json.loads(r.value) for rs in batches.values() for r in rs]
                await asyncio.gather(*(route.handle(client, event) for event in events))
        finally:
            await consumer.stop()


async def _post(
    client: aiohttp.ClientSession, url: str, body: dict[str, Any], headers: dict[str, str]
) -> None:
    async with client.post(url, json=body, headers=headers) as response:
        if response.status >= 300:
            print(f"bare router: {url} answered {response.status}", file=sys.stderr)


# SMTP connections of the bare notifier: one message at a time on each, as the gateway's
# notify sends on its one; several, so the baseline shows what the hop can do.
SMTP_CONNECTIONS = 4


async def notify(bootstrap: str, topic: str, smtp_port: int) -> None:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id="bare-notify", auto_offset_reset="earliest"
    )
    await consumer.start()
    connections = [
        aiosmtplib.SMTP(hostname=HOST, port=smtp_port, timeout=10) for _ in range(SMTP_CONNECTIONS)
    ]
    await asyncio.gather(*(smtp.connect() for smtp in connections))
    # A dossier's events share its key, so its partition: "submitted" (with the address)
    # comes first. (Kept for the whole run: a bench's worth of addresses is small.)
    addresses: dict[str, str] = {}
    try:
        while True:
            batches = await consumer.getmany(timeout_ms=200, max_records=500)
            # A dossier's mails on one connection, so they leave in the order of its events.
            queues: list[list[EmailMessage]] = [[] for _ in connections]
            for records in batches.values():
                for record in records:
                    event = json.loads(record.value)
                    code = event["code"]
                    if event["type"] == "submitted":
                        addresses[code] = event["applicant"].get("email") or ""
                    if to := addresses.get(code):
                        mail = _mail(event["type"], code, to)
                        queues[hash(code) % len(connections)].append(mail)
            await asyncio.gather(*map(_send_all, connections, queues))
    finally:
        await consumer.stop()
        await asyncio.gather(*(smtp.quit() for smtp in connections), return_exceptions=True)


async def _send_all(smtp: aiosmtplib.SMTP, mails: list[EmailMessage]) -> None:
    for mail in mails:
        await smtp.send_message(mail)


def _mail(kind: str, code: str, to: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = "bench@gateway.local"
    message["To"] = to
    message["Subject"] = SUBJECTS[kind].format(code=code)
    message.set_content(f"{SUBJECTS[kind].format(code=code)}.\n")
    return message


if __name__ == "__main__":
    role, *args = sys.argv[1:]
    if role == "api":
        api(int(args[0]), args[1], args[2])
    elif role == "router":
        router(int(args[0]), args[1], args[2], args[3], args[4])
    else:
        uvloop.run(notify(args[0], args[1], int(args[2])))
