"""Each delivery channel against the sandbox agency, which verifies signatures with the
standardwebhooks library as a real agency would; and the worker picking the channel."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, cast

import aiohttp
import httpx
import pytest
from fastapi import FastAPI, Request, Response

from core.catalogue import Agency, Catalogue
from core.signing import new_secret, signature_headers
from gateway.v1 import agency_pb2, dossier_pb2
from sandbox.runner import AppServer, Sandbox, bind_socket
from sandbox.settings import SandboxSettings
from services.routing.channels import GrpcChannel, HttpsChannel, Sent, transfer_json
from services.routing.delivery import DeliveryWorker
from services.routing.settings import RoutingSettings

SECRET = new_secret()
AGENCY = "000.21.31.H22"
NOWHERE = "http://127.0.0.1:9/v1/transfers/x"


@pytest.fixture(scope="module")
async def sandbox() -> AsyncIterator[Sandbox]:
    settings = SandboxSettings(
        http_port=0,
        registry_grpc_port=0,
        smtp_port=0,
        agency_grpc_port=0,
        agency_secret=SECRET,
        agency_delay_s=60,
        callback_timeout_s=1,
    )
    async with Sandbox(settings) as running:
        yield running


@pytest.fixture
async def http(sandbox: Sandbox) -> AsyncIterator[aiohttp.ClientSession]:
    async with httpx.AsyncClient(base_url=sandbox.url) as client:
        assert (await client.delete("/agencies")).status_code == 204
    async with aiohttp.ClientSession() as session:
        yield session


def transfer(transfer_id: str) -> agency_pb2.Transfer:
    dossier = dossier_pb2.Dossier(code="000.00.01.H22-261122-0001", procedure_code="HT.KS")
    dossier.form_data.update({"child_full_name": "Trần Minh Khôi", "child_gender": "Nam"})
    result = agency_pb2.Transfer(
        transfer_id=transfer_id,
        dossier=dossier,
        step=agency_pb2.TransferStep(index=0, name="Đăng ký khai sinh", agency_code=AGENCY),
        outcome_url=NOWHERE,
    )
    result.step.due_at.FromDatetime(datetime(2026, 11, 23, tzinfo=UTC))
    return result


def https_agency(sandbox: Sandbox, secret: str = SECRET) -> Agency:
    url = f"{sandbox.url}/agencies/{AGENCY}/transfers"
    return Agency(AGENCY, "Tư pháp", "", "https", url, url, secret)


def grpc_agency(sandbox: Sandbox, secret: str = SECRET) -> Agency:
    target = f"127.0.0.1:{sandbox.app.state.agency_inbox_server.port}"
    return Agency(AGENCY, "Tư pháp", "", "grpc", "", target, secret)


async def received(sandbox: Sandbox) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=sandbox.url) as client:
        listed: list[dict[str, Any]] = (await client.get(f"/agencies/{AGENCY}/transfers")).json()
        return listed


async def test_a_signed_https_delivery_is_verified_and_deduplicated(
    sandbox: Sandbox, http: aiohttp.ClientSession
) -> None:
    channel = HttpsChannel(http)
    assert await channel.send(https_agency(sandbox), transfer("t-https")) == Sent()
    assert await channel.send(https_agency(sandbox), transfer("t-https")) == Sent()
    [record] = await received(sandbox)
    assert (record["transfer_id"], record["verified"], record["deliveries"]) == (
        "t-https",
        True,
        2,
    )


async def test_another_secret_is_refused_for_good(
    sandbox: Sandbox, http: aiohttp.ClientSession
) -> None:
    sent = await HttpsChannel(http).send(https_agency(sandbox, new_secret()), transfer("t-x"))
    assert sent == Sent(error="HTTP 401", retryable=False)
    assert await received(sandbox) == []


async def test_an_unsigned_or_tampered_request_is_refused(
    sandbox: Sandbox, http: aiohttp.ClientSession
) -> None:
    body = json.dumps(transfer_json(transfer("t-tampered"))).encode()
    headers = signature_headers(SECRET, "t-tampered", body)
    url = https_agency(sandbox).url
    async with httpx.AsyncClient() as client:
        unsigned = await client.post(url, content=body)
        tampered = await client.post(url, content=body.replace(b"HT.KS", b"HT.KT"), headers=headers)
        genuine = await client.post(url, content=body, headers=headers)
    assert [unsigned.status_code, tampered.status_code, genuine.status_code] == [401, 401, 202]
    assert [r["transfer_id"] for r in await received(sandbox)] == ["t-tampered"]


async def test_the_signature_id_is_the_transfer_id_on_every_attempt() -> None:
    seen: list[dict[str, str]] = []
    app = FastAPI()

    @app.post("/in")
    async def take(request: Request) -> Response:
        seen.append(dict(request.headers))
        return Response(status_code=503 if len(seen) == 1 else 202)

    async with AppServer(app, bind_socket("127.0.0.1", 0)) as server:
        agency = Agency(AGENCY, "Tư pháp", "", "https", f"{server.url}/in", "", SECRET)
        async with aiohttp.ClientSession() as session:
            first = await HttpsChannel(session).send(agency, transfer("t-stable"))
            second = await HttpsChannel(session).send(agency, transfer("t-stable"))
    assert first == Sent(error="HTTP 503", retryable=True)
    assert second == Sent()
    assert [h["webhook-id"] for h in seen] == ["t-stable", "t-stable"]
    assert [h["idempotency-key"] for h in seen] == ["t-stable", "t-stable"]
    assert all(h["webhook-signature"].startswith("v1,") for h in seen)


async def test_grpc_receipt_is_the_acknowledgement(
    sandbox: Sandbox, http: aiohttp.ClientSession
) -> None:
    channel = GrpcChannel(timeout_s=5)
    try:
        assert await channel.send(grpc_agency(sandbox), transfer("t-grpc")) == Sent(
            acknowledged=True
        )
        refused = await channel.send(grpc_agency(sandbox, new_secret()), transfer("t-grpc-2"))
        async with httpx.AsyncClient(base_url=sandbox.url) as client:
            await client.put(f"/agencies/{AGENCY}/behaviour", json={"fail_next": 1})
        busy = await channel.send(grpc_agency(sandbox), transfer("t-grpc-3"))
    finally:
        await channel.close()
    assert str(refused.error).startswith("gRPC UNAUTHENTICATED")
    assert not refused.retryable
    assert str(busy.error).startswith("gRPC UNAVAILABLE")
    assert busy.retryable
    [record] = await received(sandbox)
    assert (record["transfer_id"], record["channel"], record["verified"]) == (
        "t-grpc",
        "grpc",
        True,
    )
    assert record["acknowledged_at"] is not None


class FakeChannel:
    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send(self, agency: Agency, transfer: agency_pb2.Transfer) -> Sent:
        self.sent.append(transfer.transfer_id)
        return Sent()


async def test_the_worker_sends_through_the_agency_channel() -> None:
    agencies = {
        code: Agency(code, code, "", channel, "", "somewhere", "whsec_x")
        for code, channel in [("H", "https"), ("G", "grpc"), ("K", "kafka")]
    }
    catalogue = Catalogue(procedures={}, agencies=agencies)
    worker = DeliveryWorker(
        RoutingSettings(),
        cast(Any, None),
        cast(Any, None),
        cast(Any, None),
        catalogue,
        cast(Any, SimpleNamespace(transfers_waiting=None)),
        cast(Any, None),
    )
    channels = {name: FakeChannel() for name in ("https", "grpc", "kafka")}
    blob = dossier_pb2.Dossier(code="D-1").SerializeToString()

    def row(agency_code: str) -> SimpleNamespace:
        return SimpleNamespace(
            transfer_id=f"t-{agency_code}",
            dossier_code="D-1",
            agency_code=agency_code,
            step_index=0,
            step_name="s",
            status="pending",
            attempts=0,
            round=0,
            redeliveries=0,
            trace={},
            due_at=datetime(2026, 11, 23, tzinfo=UTC),
        )

    for code in ("K", "G", "H"):
        await worker._deliver(cast(Any, channels), row(code), blob)
    unknown = await worker._deliver(cast(Any, channels), row("Z"), blob)
    assert {name: c.sent for name, c in channels.items()} == {
        "https": ["t-H"],
        "grpc": ["t-G"],
        "kafka": ["t-K"],
    }
    assert unknown.sent == Sent("agency Z is not in the catalogue", retryable=False)
