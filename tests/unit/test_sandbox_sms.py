"""The sandbox SMS gateway through its HTTP API: acceptance, resends, validation, failures."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from sandbox.sms import SmsStore, segments, sms_router

KEY = {"X-Api-Key": "test-key"}
LAN = "+84912345678"
VIETNAMESE = "Hồ sơ 000.00.01.H22-261122-0001 đã được tiếp nhận."


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    app.include_router(sms_router(SmsStore()))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sandbox") as http:
        yield http


def sms(reference: str, to: str = LAN, text: str = VIETNAMESE) -> dict[str, Any]:
    return {"to": to, "text": text, "reference": reference}


async def test_accepts_records_and_lists_a_message(client: httpx.AsyncClient) -> None:
    answer = await client.post("/sms/messages", json=sms("n-1"), headers=KEY)
    assert answer.status_code == 202
    body = answer.json()
    assert body["status"] == "accepted"
    assert body["segments"] == 1
    assert body["id"]

    await client.post("/sms/messages", json=sms("n-2", to="+84388123456"), headers=KEY)
    listed = (await client.get("/sms/messages", params={"to": LAN})).json()
    assert [(m["id"], m["to"], m["text"], m["reference"]) for m in listed] == [
        (body["id"], LAN, VIETNAMESE, "n-1")
    ]
    assert listed[0]["received_at"].startswith("20")
    assert listed[0]["encoding"] == "ucs2"
    # A "+" left unencoded in the query string arrives as a space; still found.
    unencoded = (await client.get(f"/sms/messages?to={LAN}")).json()
    assert [m["id"] for m in unencoded] == [body["id"]]
    assert len((await client.get("/sms/messages")).json()) == 2


async def test_the_same_reference_is_one_sms(client: httpx.AsyncClient) -> None:
    first = await client.post("/sms/messages", json=sms("n-1"), headers=KEY)
    again = await client.post("/sms/messages", json=sms("n-1"), headers=KEY)
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["duplicate"] is True
    assert len((await client.get("/sms/messages")).json()) == 1

    other = await client.post("/sms/messages", json=sms("n-1", text="khác"), headers=KEY)
    assert other.status_code == 409, "a reused reference for another text is a client bug"


@pytest.mark.parametrize("headers", [{}, {"X-Api-Key": ""}, {"X-Api-Key": "  "}])
async def test_an_api_key_is_required(client: httpx.AsyncClient, headers: dict[str, str]) -> None:
    answer = await client.post("/sms/messages", json=sms("n-1"), headers=headers)
    assert answer.status_code == 401
    assert answer.json()["error"] == "unauthorized"
    assert (await client.get("/sms/messages")).json() == []


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (sms("n", to="0912345678"), "to"),
        (sms("n", to="84912345678"), "to"),
        (sms("n", to="+8491234"), "to"),  # 7 digits
        (sms("n", to="+8491234567890123"), "to"),  # 16 digits
        (sms("n", to="+84 912 345 678"), "to"),
        (sms("n", text=""), "text"),
        (sms("n", text="a" * 1601), "text"),
        (sms(""), "reference"),
        ({"to": LAN, "text": "x"}, "reference"),
    ],
)
async def test_invalid_messages_are_refused_with_a_json_error(
    client: httpx.AsyncClient, payload: dict[str, Any], field: str
) -> None:
    answer = await client.post("/sms/messages", json=payload, headers=KEY)
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid-request"
    assert [p["field"] for p in answer.json()["detail"]] == [field]


async def test_a_body_that_is_not_json_is_a_400(client: httpx.AsyncClient) -> None:
    answer = await client.post("/sms/messages", content=b"to=+84912345678", headers=KEY)
    assert answer.status_code == 400


async def test_longest_text_is_accepted_in_segments(client: httpx.AsyncClient) -> None:
    answer = await client.post("/sms/messages", json=sms("n", text="ô" * 1600), headers=KEY)
    assert answer.status_code == 202
    assert answer.json()["segments"] == 24  # ceil(1600 / 67)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a" * 160, ("gsm7", 1)),
        ("a" * 161, ("gsm7", 2)),
        ("a" * 306, ("gsm7", 2)),
        ("a" * 307, ("gsm7", 3)),
        ("{" * 80, ("gsm7", 1)),  # extension characters cost two septets
        ("{" * 81, ("gsm7", 2)),
        ("ơ" * 70, ("ucs2", 1)),
        ("ơ" * 71, ("ucs2", 2)),
        ("ơ" * 134, ("ucs2", 2)),
        ("ơ" * 135, ("ucs2", 3)),
        # One diacritic is enough to make the whole text UCS-2.
        ("a" * 69 + "đ", ("ucs2", 1)),
        ("a" * 70 + "đ", ("ucs2", 2)),
        ("🙂" * 35, ("ucs2", 1)),  # two UTF-16 units each
        ("🙂" * 36, ("ucs2", 2)),
    ],
)
def test_segments(text: str, expected: tuple[str, int]) -> None:
    assert segments(text) == expected


async def test_fails_next_n_then_recovers(client: httpx.AsyncClient) -> None:
    set_ = await client.put("/sms/behaviour", json={"fail_next": 2, "fail_status": 429})
    assert set_.status_code == 200
    statuses = [
        (await client.post("/sms/messages", json=sms(f"n-{i}"), headers=KEY)).status_code
        for i in range(3)
    ]
    assert statuses == [429, 429, 202]
    assert [m["reference"] for m in (await client.get("/sms/messages")).json()] == ["n-2"]


async def test_429_says_when_to_come_back(client: httpx.AsyncClient) -> None:
    await client.put("/sms/behaviour", json={"fail_next": 1, "fail_status": 429})
    answer = await client.post("/sms/messages", json=sms("n"), headers=KEY)
    assert answer.headers["retry-after"] == "1"


async def test_fail_all_until_reset(client: httpx.AsyncClient) -> None:
    await client.put("/sms/behaviour", json={"fail_all": True, "fail_status": 400})
    for i in range(3):
        answer = await client.post("/sms/messages", json=sms(f"n-{i}"), headers=KEY)
        assert answer.status_code == 400
    assert (await client.delete("/sms/messages")).status_code == 204
    assert (await client.post("/sms/messages", json=sms("n"), headers=KEY)).status_code == 202


async def test_reset_forgets_messages_and_references(client: httpx.AsyncClient) -> None:
    first = await client.post("/sms/messages", json=sms("n-1"), headers=KEY)
    await client.delete("/sms/messages")
    assert (await client.get("/sms/messages")).json() == []
    again = await client.post("/sms/messages", json=sms("n-1"), headers=KEY)
    assert again.status_code == 202
    assert again.json()["id"] != first.json()["id"]


@pytest.mark.parametrize("behaviour", [{"fail_status": 500}, {"fail_next": -1}])
async def test_behaviour_is_validated(client: httpx.AsyncClient, behaviour: dict[str, Any]) -> None:
    assert (await client.put("/sms/behaviour", json=behaviour)).status_code == 422
