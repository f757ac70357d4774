"""Notify's SMS gateway client against the real sandbox SMS gateway, served by uvicorn."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from fastapi import FastAPI, Response

from sandbox.runner import AppServer, bind_socket
from sandbox.sms import SmsStore, sms_router
from services.notify.sms import SmsGateway

LAN = "+84912345678"
TEXT = "Hồ sơ 000.00.01.H22-261122-0001 đã được tiếp nhận."
SLOW_S = 0.3


class Served:
    def __init__(self, store: SmsStore, url: str) -> None:
        self.store = store
        self.url = url
        self.messages = f"{url}/sms/messages"

    async def behave(self, **behaviour: object) -> None:
        # Through the HTTP API, as an integration test would; async, as the server shares our loop.
        async with httpx.AsyncClient(trust_env=False) as http:
            response = await http.put(f"{self.url}/sms/behaviour", json=behaviour)
        assert response.status_code == 200, response.text


# One server per module, wiped before each test: uvicorn per test costs more than the tests.
@pytest.fixture(scope="module")
async def served() -> AsyncIterator[Served]:
    store = SmsStore()
    app = FastAPI()
    app.include_router(sms_router(store))

    @app.post("/slow")
    async def slow() -> Response:
        await asyncio.sleep(SLOW_S)
        return Response(status_code=202)

    async with AppServer(app, bind_socket("127.0.0.1", 0)) as server:
        yield Served(store, server.url)


@pytest.fixture
async def gateway(served: Served) -> AsyncIterator[SmsGateway]:
    served.store.reset()
    async with SmsGateway(served.messages, "notify-key", timeout_s=2.0) as sms:
        yield sms


async def test_delivered_with_the_gateway_id(served: Served, gateway: SmsGateway) -> None:
    result = await gateway.send(LAN, TEXT, reference="notification-1")
    assert result.status == "delivered"
    assert result.delivered
    assert result.reason is None
    [message] = served.store.messages
    assert result.provider_id == message["id"]
    assert (message["to"], message["text"], message["reference"]) == (LAN, TEXT, "notification-1")


async def test_a_resend_with_the_same_reference_is_one_sms(
    served: Served, gateway: SmsGateway
) -> None:
    first = await gateway.send(LAN, TEXT, reference="notification-1")
    again = await gateway.send(LAN, TEXT, reference="notification-1")
    assert again.status == "delivered"
    assert again.provider_id == first.provider_id
    assert len(served.store.messages) == 1


async def test_503_is_temporary_and_a_retry_goes_through(
    served: Served, gateway: SmsGateway
) -> None:
    await served.behave(fail_next=1, fail_status=503)
    failed = await gateway.send(LAN, TEXT, reference="notification-1")
    assert failed.status == "temporary-failure"
    assert failed.reason is not None
    assert failed.reason.startswith("HTTP 503")
    assert failed.provider_id is None
    assert served.store.messages == []

    retried = await gateway.send(LAN, TEXT, reference="notification-1")
    assert retried.status == "delivered"
    assert len(served.store.messages) == 1


async def test_429_is_temporary_with_retry_after(served: Served, gateway: SmsGateway) -> None:
    await served.behave(fail_next=1, fail_status=429)
    result = await gateway.send(LAN, TEXT, reference="notification-1")
    assert result.status == "temporary-failure"
    assert result.retry_after_s == 1.0


async def test_400_is_permanent(served: Served, gateway: SmsGateway) -> None:
    await served.behave(fail_next=1, fail_status=400)
    result = await gateway.send(LAN, TEXT, reference="notification-1")
    assert result.status == "permanent-failure"
    assert result.reason is not None
    assert "HTTP 400" in result.reason


async def test_a_number_the_gateway_refuses_is_permanent_with_its_reason(
    gateway: SmsGateway,
) -> None:
    result = await gateway.send("0912345678", TEXT, reference="notification-1")
    assert result.status == "permanent-failure"
    assert result.reason is not None
    assert "HTTP 400" in result.reason
    assert '"field":"to"' in result.reason


async def test_a_wrong_api_key_is_a_technical_failure(served: Served) -> None:
    # The sandbox takes any non-empty key; a blank one stands for a misconfigured client.
    async with SmsGateway(served.messages, " ") as sms:
        result = await sms.send(LAN, TEXT, reference="notification-1")
    assert result.status == "technical-failure"
    assert result.reason is not None
    assert "HTTP 401" in result.reason


@pytest.fixture
def refused_url() -> Iterator[str]:
    # Bound but not listening: connections are refused at once, and the port is ours.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/sms/messages"


async def test_connection_refused_is_temporary(refused_url: str) -> None:
    async with SmsGateway(refused_url, "notify-key") as sms:
        result = await sms.send(LAN, TEXT, reference="notification-1")
    assert result.status == "temporary-failure"
    assert result.reason is not None
    assert "Connect" in result.reason


async def test_timeout_is_temporary(served: Served) -> None:
    async with SmsGateway(f"{served.url}/slow", "notify-key", timeout_s=0.05) as sms:
        result = await sms.send(LAN, TEXT, reference="notification-1")
    assert result.status == "temporary-failure"
    assert result.reason is not None
    assert "Timeout" in result.reason


async def test_send_needs_start_and_close_is_idempotent(served: Served) -> None:
    sms = SmsGateway(served.messages, "notify-key")
    with pytest.raises(RuntimeError, match="before start"):
        await sms.send(LAN, TEXT, reference="notification-1")
    await sms.start()
    assert (await sms.send(LAN, TEXT, reference="notification-1")).delivered
    await sms.close()
    await sms.close()
    with pytest.raises(RuntimeError, match="before start"):
        await sms.send(LAN, TEXT, reference="notification-1")


@pytest.mark.parametrize(("url", "key"), [("", "k"), ("http://gw", "")])
def test_url_and_key_are_required(url: str, key: str) -> None:
    with pytest.raises(ValueError, match="required"):
        SmsGateway(url, key)
