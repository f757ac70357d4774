"""The email channel against the stand-in relay: what a mailbox reads is what was rendered."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from sandbox.runner import Sandbox
from sandbox.settings import SandboxSettings
from services.notify.channels import EmailChannel
from services.notify.settings import NotifySettings

SUBJECT = "Hồ sơ H22.21-261203-000123 đã được giải quyết xong"
BODY = (
    "Kính gửi Nguyễn Thị Lan,\n\nHồ sơ H22.21-261203-000123 — Đăng ký khai sinh — đã được "
    "giải quyết xong. Mời Ông/Bà nhận kết quả theo hình thức đã đăng ký.\n"
)


@pytest.fixture(scope="module")
async def sandbox() -> AsyncIterator[Sandbox]:
    async with Sandbox(SandboxSettings(http_port=0, smtp_port=0, registry_grpc_port=0)) as running:
        yield running


def row(number: int, recipient: str = "lan.nguyen@example.vn") -> dict[str, str]:
    return {
        "id": f"5d0c6f0e-0000-4000-8000-{number:012d}",
        "recipient": recipient,
        "subject": SUBJECT,
        "body": BODY,
        "dossier_code": "H22.21-261203-000123",
    }


async def test_messages_read_back_as_rendered_over_one_connection(sandbox: Sandbox) -> None:
    channel = EmailChannel(NotifySettings(smtp_port=sandbox.smtp_port))
    try:
        outcomes = [await channel.send(row(n)) for n in (1, 2)]
    finally:
        await channel.close()

    assert [o.status for o in outcomes] == ["delivered", "delivered"]
    async with httpx.AsyncClient(base_url=sandbox.url, trust_env=False) as http:
        got = (await http.get("/mail/messages", params={"to": "lan.nguyen@example.vn"})).json()
    assert [m["headers"]["X-Notification-Id"] for m in got] == [row(1)["id"], row(2)["id"]]
    for mail in got:
        assert mail["subject"] == SUBJECT
        assert mail["text"] == BODY
        assert mail["from"] == "no-reply@dichvucong.gov.vn"
        assert mail["headers"]["From"] == "Cổng Dịch vụ công <no-reply@dichvucong.gov.vn>"
        assert mail["headers"]["X-Dossier-Code"] == "H22.21-261203-000123"
        assert mail["message_id"].startswith("<")
        assert mail["message_id"].endswith("@dossier-gateway>")
        assert mail["headers"]["X-Notification-Id"] in mail["message_id"]


async def test_a_line_break_in_a_header_value_sends_nothing(sandbox: Sandbox) -> None:
    channel = EmailChannel(NotifySettings(smtp_port=sandbox.smtp_port))
    smuggled = "x@example.vn\r\nBcc: victim@example.vn"
    try:
        with pytest.raises(ValueError, match="line break"):
            await channel.send(row(3, recipient=smuggled))
    finally:
        await channel.close()
    async with httpx.AsyncClient(base_url=sandbox.url, trust_env=False) as http:
        assert (await http.get("/mail/messages", params={"to": "victim@example.vn"})).json() == []
