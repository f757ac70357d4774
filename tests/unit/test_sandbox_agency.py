"""The demo agency back-office, served for real and calling back a real HTTP receiver."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from sandbox.runner import AppServer, Sandbox, bind_socket
from sandbox.settings import SandboxSettings

AGENCY = "SO-TNMT-HN"


class Receiver:
    """The gateway's outcome endpoint as the agency sees it: records every callback."""

    def __init__(self) -> None:
        self.app = FastAPI()
        self.app.post("/outcomes/{transfer_id}")(self._outcome)
        self.reset()

    def reset(
        self,
        fail_first: int = 0,
        status: int = 204,
        fail_status: int = 503,
        fail_headers: dict[str, str] | None = None,
    ) -> None:
        self.calls: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.attempts = 0
        self.attempted_at: list[float] = []
        # The W3C trace context each callback came with (None: none).
        self.traceparents: list[str | None] = []
        self._fail_first = fail_first
        self._status = status
        self._fail_status = fail_status
        self._fail_headers = fail_headers

    async def _outcome(self, transfer_id: str, request: Request) -> Response:
        self.attempts += 1
        self.attempted_at.append(asyncio.get_running_loop().time())
        self.traceparents.append(request.headers.get("traceparent"))
        if self.attempts <= self._fail_first:
            return JSONResponse(
                status_code=self._fail_status,
                content={"detail": "not now"},
                headers=self._fail_headers,
            )
        body = await request.json()
        key = request.headers.get("idempotency-key")
        await self.calls.put({"transfer_id": transfer_id, "body": body, "key": key})
        return Response(status_code=self._status)

    async def next_call(self, within_s: float = 3.0) -> dict[str, Any]:
        return await asyncio.wait_for(self.calls.get(), within_s)


# One sandbox and one receiver per module, wiped before each test: starting uvicorn
# per test would cost more than all the assertions together.
@pytest.fixture(scope="module")
async def sandbox() -> AsyncIterator[Sandbox]:
    settings = SandboxSettings(
        http_port=0, smtp_port=0, registry_grpc_port=0, agency_delay_s=0.05, callback_timeout_s=10
    )
    async with Sandbox(settings) as running:
        yield running


@pytest.fixture(scope="module")
async def served_receiver() -> AsyncIterator[tuple[Receiver, str]]:
    recv = Receiver()
    async with AppServer(recv.app, bind_socket("127.0.0.1", 0)) as server:
        yield recv, server.url


@pytest.fixture
async def client(sandbox: Sandbox) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sandbox.url, trust_env=False) as http:
        assert (await http.delete("/agencies")).status_code == 204
        yield http


@pytest.fixture
def receiver(served_receiver: tuple[Receiver, str]) -> tuple[Receiver, str]:
    served_receiver[0].reset()
    return served_receiver


def transfer(transfer_id: str, outcome_base: str, step_name: str = "Thẩm định hồ sơ") -> Any:
    return {
        "transfer_id": transfer_id,
        "dossier": {
            "code": "HS-2024-000123",
            "procedure_code": "1.004227",
            "receiving_agency_code": AGENCY,
            "applicant": {"full_name": "Nguyễn Văn An", "id_number": "001085012345"},
            "form_data": {"dia_chi_thua_dat": "Số 12 phố Hàng Bài, Hoàn Kiếm"},
            "received_at": "2024-05-06T08:00:00+07:00",
            "due_at": "2024-05-20T17:00:00+07:00",
        },
        "step": {"index": 1, "name": step_name, "agency_code": AGENCY, "due_at": "2024-05-10"},
        "outcome_url": f"{outcome_base}/outcomes/{transfer_id}",
    }


async def deliver(client: httpx.AsyncClient, body: Any, key: str | None = None) -> httpx.Response:
    headers = {"Idempotency-Key": key or body["transfer_id"]}
    return await client.post(f"/agencies/{AGENCY}/transfers", json=body, headers=headers)


async def test_duplicate_delivery_reports_the_outcome_once(
    client: httpx.AsyncClient, receiver: tuple[Receiver, str]
) -> None:
    recv, base = receiver
    body = transfer("tr-1", base)

    first = await deliver(client, body)
    second = await deliver(client, body)

    assert first.status_code == 202
    assert first.json() == {"transfer_id": "tr-1", "status": "accepted"}
    assert second.status_code == 200
    assert second.json() == {"status": "duplicate"}
    call = await recv.next_call()
    assert call == {
        "transfer_id": "tr-1",
        "body": {"outcome": "done", "note": "Đã giải quyết xong bước Thẩm định hồ sơ"},
        "key": "tr-1",
    }
    await asyncio.sleep(0.2)
    assert recv.calls.empty()
    listed = (await client.get(f"/agencies/{AGENCY}/transfers")).json()
    assert len(listed) == 1
    assert listed[0]["transfer_id"] == "tr-1"
    assert listed[0]["dossier_code"] == "HS-2024-000123"
    assert listed[0]["step_index"] == 1
    assert listed[0]["deliveries"] == 2
    assert listed[0]["first_received_at"]
    assert listed[0]["reported_at"] is not None
    summary = (await client.get("/agencies")).json()
    assert summary == {AGENCY: {"transfers": 1, "deliveries": 2, "rejected": 0}}


async def test_idempotency_key_header_wins_over_body(
    client: httpx.AsyncClient, receiver: tuple[Receiver, str]
) -> None:
    recv, base = receiver
    response = await deliver(client, transfer("from-body", base), key="from-header")

    assert response.json() == {"transfer_id": "from-header", "status": "accepted"}
    listed = (await client.get(f"/agencies/{AGENCY}/transfers")).json()
    assert [t["transfer_id"] for t in listed] == ["from-header"]
    assert (await recv.next_call())["key"] == "from-header"


async def test_fail_next_rejects_without_recording(
    client: httpx.AsyncClient, receiver: tuple[Receiver, str]
) -> None:
    _, base = receiver
    behaviour = {"fail_next": 2, "fail_status": 500}
    set_response = await client.put(f"/agencies/{AGENCY}/behaviour", json=behaviour)
    assert set_response.json() == {
        "agency_code": AGENCY,
        "fail_next": 2,
        "fail_status": 500,
        "delay_s": None,
        "acknowledge": True,
        "hang_next": 0,
        "hang_s": 0.0,
    }

    statuses = [(await deliver(client, transfer("tr-2", base))).status_code for _ in range(3)]

    assert statuses == [500, 500, 202]
    summary = (await client.get("/agencies")).json()
    assert summary[AGENCY] == {"transfers": 1, "deliveries": 1, "rejected": 2}


async def test_fail_status_defaults_to_503(client: httpx.AsyncClient) -> None:
    await client.put(f"/agencies/{AGENCY}/behaviour", json={"fail_next": 1})

    response = await deliver(client, transfer("tr-3", "http://127.0.0.1:9"))

    assert response.status_code == 503


@pytest.mark.parametrize("missing", ["transfer_id", "dossier.code", "outcome_url"])
async def test_incomplete_delivery_is_rejected(client: httpx.AsyncClient, missing: str) -> None:
    body = transfer("tr-4", "http://127.0.0.1:9")
    if missing == "dossier.code":
        del body["dossier"]["code"]
    else:
        del body[missing]

    response = await client.post(f"/agencies/{AGENCY}/transfers", json=body)

    assert response.status_code == 422
    assert (await client.get(f"/agencies/{AGENCY}/transfers")).json() == []


async def test_callback_waits_for_a_gateway_that_is_down(client: httpx.AsyncClient) -> None:
    # Bound but not listening: connections are refused, as when the routing service is killed.
    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    recv = Receiver()

    accepted = await deliver(client, transfer("tr-5", f"http://127.0.0.1:{port}"))
    assert accepted.status_code == 202
    await asyncio.sleep(1.0)
    listed = (await client.get(f"/agencies/{AGENCY}/transfers")).json()
    assert listed[0]["reported_at"] is None

    async with AppServer(recv.app, sock):
        call = await recv.next_call(within_s=5.0)

    assert call["body"]["outcome"] == "done"
    listed = (await client.get(f"/agencies/{AGENCY}/transfers")).json()
    assert listed[0]["reported_at"] is not None


async def test_callback_answered_with_5xx_is_retried(
    client: httpx.AsyncClient, receiver: tuple[Receiver, str]
) -> None:
    recv, base = receiver
    recv.reset(fail_first=2)

    await deliver(client, transfer("tr-9", base))
    call = await recv.next_call()

    assert call["transfer_id"] == "tr-9"
    assert recv.attempts == 3


async def test_callback_shed_with_429_is_retried_after_the_time_asked(
    client: httpx.AsyncClient, receiver: tuple[Receiver, str]
) -> None:
    # The gateway's fair share answers an agency flooding it with 429: a client asks again.
    recv, base = receiver
    recv.reset(fail_first=1, fail_status=429, fail_headers={"Retry-After": "1"})

    await deliver(client, transfer("tr-429", base))
    call = await recv.next_call(within_s=5.0)

    assert call["transfer_id"] == "tr-429"
    assert recv.attempts == 2
    assert recv.attempted_at[1] - recv.attempted_at[0] >= 0.9


async def test_callback_refused_with_4xx_is_not_retried(
    client: httpx.AsyncClient, receiver: tuple[Receiver, str]
) -> None:
    recv, base = receiver
    recv.reset(status=404)

    await deliver(client, transfer("tr-6", base))
    await recv.next_call()
    await asyncio.sleep(0.3)

    assert recv.attempts == 1
    listed = (await client.get(f"/agencies/{AGENCY}/transfers")).json()
    assert listed[0]["reported_at"] is None


async def test_delay_override_and_reset_cancels_pending_callbacks(
    client: httpx.AsyncClient, receiver: tuple[Receiver, str]
) -> None:
    recv, base = receiver
    await client.put(f"/agencies/{AGENCY}/behaviour", json={"delay_s": 0.4})
    await deliver(client, transfer("tr-7", base))
    await asyncio.sleep(0.2)

    reset = await client.delete("/agencies")
    await asyncio.sleep(0.4)

    assert reset.status_code == 204
    assert recv.attempts == 0
    assert (await client.get("/agencies")).json() == {}
    # The override went with the reset: the default short delay applies again.
    await deliver(client, transfer("tr-8", base))
    assert (await recv.next_call(within_s=1.0))["transfer_id"] == "tr-8"


async def test_a_transfer_taken_silently_is_picked_up_when_it_comes_again(
    client: httpx.AsyncClient, receiver: tuple[Receiver, str]
) -> None:
    recv, base = receiver
    await client.put(f"/agencies/{AGENCY}/behaviour", json={"acknowledge": False})
    await deliver(client, transfer("tr-s", base))
    await asyncio.sleep(0.2)
    assert recv.calls.empty()

    await client.put(f"/agencies/{AGENCY}/behaviour", json={"acknowledge": True})
    again = await deliver(client, transfer("tr-s", base))

    assert again.json() == {"status": "duplicate"}
    assert (await recv.next_call())["transfer_id"] == "tr-s"
    # Reported: one more delivery is only counted.
    await deliver(client, transfer("tr-s", base))
    await asyncio.sleep(0.3)
    assert recv.calls.empty()
    [listed] = (await client.get(f"/agencies/{AGENCY}/transfers")).json()
    assert (listed["deliveries"], listed["effects"]) == (3, 1)
    assert listed["reported_at"] is not None


async def test_the_outcome_continues_the_trace_the_delivery_carried(
    client: httpx.AsyncClient, receiver: tuple[Receiver, str]
) -> None:
    recv, base = receiver
    trace_id = secrets.token_hex(16)
    traced = {"Idempotency-Key": "tr-t", "traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"}

    answer = await client.post(
        f"/agencies/{AGENCY}/transfers", json=transfer("tr-t", base), headers=traced
    )

    assert answer.status_code == 202
    assert (await recv.next_call())["transfer_id"] == "tr-t"
    # The agency's own span (or, with no SDK set up, the delivery's context passed on).
    [traceparent] = recv.traceparents
    assert traceparent is not None
    assert traceparent.split("-")[1] == trace_id


async def test_liveness(client: httpx.AsyncClient) -> None:
    response = await client.get("/health/live")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
