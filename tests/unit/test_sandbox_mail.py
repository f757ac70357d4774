"""The stand-in mail relay: real SMTP in, JSON out."""

from __future__ import annotations

import asyncio
import base64
import smtplib
from collections.abc import AsyncIterator
from email.message import EmailMessage
from email.utils import make_msgid

import aiosmtplib
import httpx
import pytest

from sandbox.runner import Sandbox
from sandbox.settings import SandboxSettings

SUBJECT = "Hồ sơ đã được tiếp nhận"
BODY = "Kính gửi ông Nguyễn Văn An,\nHồ sơ HS-2024-000123 đã được tiếp nhận.\n"


@pytest.fixture(scope="module")
async def sandbox() -> AsyncIterator[Sandbox]:
    async with Sandbox(SandboxSettings(http_port=0, smtp_port=0, registry_grpc_port=0)) as running:
        yield running


@pytest.fixture
async def client(sandbox: Sandbox) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sandbox.url, trust_env=False) as http:
        assert (await http.delete("/mail/messages")).status_code == 204
        yield http


def notification(to: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = "Cổng tiếp nhận hồ sơ <no-reply@dichvucong.example.vn>"
    message["To"] = to
    message["Subject"] = SUBJECT
    message["Message-ID"] = make_msgid(domain="dichvucong.example.vn")
    message.set_content(BODY)
    return message


async def test_vietnamese_notification_reads_back_decoded(
    sandbox: Sandbox, client: httpx.AsyncClient
) -> None:
    message = notification("Nguyễn Văn An <an.nguyen@example.vn>")

    await aiosmtplib.send(message, hostname="127.0.0.1", port=sandbox.smtp_port, start_tls=False)

    response = await client.get("/mail/messages", params={"to": "AN.NGUYEN@example.vn"})
    assert response.status_code == 200
    [got] = response.json()
    assert got["id"] == 1
    assert got["subject"] == SUBJECT
    assert got["text"] == BODY
    assert got["from"] == "no-reply@dichvucong.example.vn"
    assert got["to"] == ["an.nguyen@example.vn"]
    assert got["message_id"] == message["Message-ID"]
    assert got["headers"]["Subject"] == SUBJECT
    assert got["headers"]["To"] == "Nguyễn Văn An <an.nguyen@example.vn>"
    assert got["received_at"]


async def test_rfc2047_subject_on_the_wire_is_decoded(
    sandbox: Sandbox, client: httpx.AsyncClient
) -> None:
    encoded = base64.b64encode(SUBJECT.encode()).decode()
    raw = (
        "From: gateway@example.vn\r\n"
        "To: an.nguyen@example.vn\r\n"
        f"Subject: =?utf-8?b?{encoded}?=\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: text/plain; charset="utf-8"\r\n'
        "Content-Transfer-Encoding: base64\r\n"
        "\r\n" + base64.encodebytes(BODY.encode()).decode().replace("\n", "\r\n")
    )

    await aiosmtplib.send(
        raw.encode("ascii"),
        sender="gateway@example.vn",
        recipients=["an.nguyen@example.vn"],
        hostname="127.0.0.1",
        port=sandbox.smtp_port,
        start_tls=False,
    )

    [got] = (await client.get("/mail/messages")).json()
    assert got["subject"] == SUBJECT
    assert got["text"] == BODY


async def test_smtputf8_raw_headers_are_read_correctly(
    sandbox: Sandbox, client: httpx.AsyncClient
) -> None:
    raw = (
        f"From: gateway@example.vn\r\nTo: an.nguyen@example.vn\r\nSubject: {SUBJECT}\r\n"
        'MIME-Version: 1.0\r\nContent-Type: text/plain; charset="utf-8"\r\n'
        "Content-Transfer-Encoding: 8bit\r\n\r\n" + BODY.replace("\n", "\r\n")
    ).encode()

    def send_with_stdlib() -> None:
        # smtplib blocks, so it talks to the server on this loop from a worker thread.
        with smtplib.SMTP("127.0.0.1", sandbox.smtp_port, timeout=5) as smtp:
            smtp.ehlo()
            smtp.sendmail("gateway@example.vn", ["an.nguyen@example.vn"], raw, ["SMTPUTF8"])

    await asyncio.to_thread(send_with_stdlib)

    [got] = (await client.get("/mail/messages")).json()
    assert got["subject"] == SUBJECT
    assert got["text"] == BODY


async def test_filter_by_recipient_and_clear(sandbox: Sandbox, client: httpx.AsyncClient) -> None:
    first = notification("an.nguyen@example.vn, binh.tran@example.vn")
    second = notification("chi.le@example.vn")
    for message in (first, second):
        await aiosmtplib.send(
            message, hostname="127.0.0.1", port=sandbox.smtp_port, start_tls=False
        )

    everything = (await client.get("/mail/messages")).json()
    for_binh = (await client.get("/mail/messages", params={"to": "Binh.Tran@Example.vn"})).json()
    for_nobody = (await client.get("/mail/messages", params={"to": "x@example.vn"})).json()

    assert [m["id"] for m in everything] == [1, 2]
    assert everything[0]["to"] == ["an.nguyen@example.vn", "binh.tran@example.vn"]
    assert [m["id"] for m in for_binh] == [1]
    assert for_nobody == []
    assert (await client.delete("/mail/messages")).status_code == 204
    assert (await client.get("/mail/messages")).json() == []
