"""Stand-in mail relay: accepts everything over plain SMTP and keeps it for inspection.

The product sends through its ordinary SMTP client; tests and people then read what
citizens would have received through GET /mail/messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session
from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

log = logging.getLogger("sandbox.mail")

# Fixed instead of socket.getfqdn(), which can stall for seconds on hosts without DNS.
SMTP_HOSTNAME = "sandbox.local"


def _plain_body(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    if part is None:
        return ""
    try:
        content = part.get_content()
    except (LookupError, UnicodeError):
        # Unknown or lying charset: still show the citizen-facing text rather than nothing.
        payload = part.get_payload(decode=True)
        return payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
    # SMTP carries CRLF line ends; readers of the API expect ordinary text.
    return content.replace("\r\n", "\n") if isinstance(content, str) else ""


class MailStore:
    """Every message received, oldest first."""

    def __init__(self) -> None:
        self._messages: list[dict[str, Any]] = []
        self._next_id = 1
        # Set through PUT /mail/behaviour: how late DATA is acknowledged.
        self.answer_delay_s = 0.0

    def add(self, mail_from: str, rcpt_tos: list[str], data: bytes) -> dict[str, Any]:
        parsed = BytesParser(policy=policy.default).parsebytes(data)
        assert isinstance(parsed, EmailMessage)  # guaranteed by policy.default
        headers: dict[str, str] = {}
        for name, value in parsed.items():
            decoded = str(value)
            # Repeated headers (Received, …) are kept, joined in their original order.
            headers[name] = f"{headers[name]}, {decoded}" if name in headers else decoded
        message = {
            "id": self._next_id,
            "message_id": str(parsed.get("Message-ID", "")),
            "from": mail_from,
            "to": list(rcpt_tos),
            "subject": str(parsed.get("Subject", "")),
            "text": _plain_body(parsed),
            "headers": headers,
            "received_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
        }
        self._next_id += 1
        self._messages.append(message)
        log.info(
            "mail %d from %s to %s: %s",
            message["id"],
            mail_from,
            ", ".join(rcpt_tos),
            message["subject"],
        )
        return message

    def messages(self, to: str | None = None) -> list[dict[str, Any]]:
        if to is None:
            return list(self._messages)
        wanted = to.strip().lower()
        return [m for m in self._messages if wanted in (r.lower() for r in m["to"])]

    def clear(self) -> None:
        self._messages.clear()
        self._next_id = 1
        self.answer_delay_s = 0.0


class MailBehaviourIn(BaseModel):
    answer_delay_s: float = Field(default=0.0, ge=0, le=30)


class _Handler:
    def __init__(self, store: MailStore) -> None:
        self._store = store

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        # original_content is the message exactly as sent, before any decode_data conversion.
        data = envelope.original_content
        if data is None:
            return "554 No message data"
        try:
            self._store.add(envelope.mail_from or "", list(envelope.rcpt_tos), data)
        except Exception:
            log.exception("could not parse a received message")
            return "451 Could not store the message"
        if self._store.answer_delay_s:
            # Kept, but acknowledged late: a client killed meanwhile never learns it was sent.
            await asyncio.sleep(self._store.answer_delay_s)
        return "250 Message accepted for delivery"


class MailServer:
    """aiosmtpd served on the running event loop, so no extra thread shares the store."""

    def __init__(self, store: MailStore, host: str, port: int) -> None:
        self._store = store
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("SMTP server is not started")
        sockname: tuple[str, int] = self._server.sockets[0].getsockname()
        return sockname[1]

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        handler = _Handler(self._store)
        self._server = await loop.create_server(
            lambda: SMTP(handler, hostname=SMTP_HOSTNAME, enable_SMTPUTF8=True, loop=loop),
            self._host,
            self._port,
        )

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        # Newer Pythons wait here for open client sessions; an idle client must not hang us.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), timeout=2.0)
        self._server = None


def mail_router(store: MailStore) -> APIRouter:
    router = APIRouter(prefix="/mail", tags=["mail"])

    @router.get("/messages")
    async def list_messages(to: str | None = None) -> list[dict[str, Any]]:
        return store.messages(to)

    @router.delete("/messages", status_code=204)
    async def clear_messages() -> Response:
        store.clear()
        return Response(status_code=204)

    @router.put("/behaviour")
    async def set_behaviour(body: MailBehaviourIn) -> dict[str, Any]:
        store.answer_delay_s = body.answer_delay_s
        return body.model_dump()

    return router
