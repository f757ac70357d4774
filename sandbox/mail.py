"""Stand-in mail relay: accepts everything over plain SMTP and keeps it for inspection.

The product sends through its ordinary SMTP client; tests and people then read what
citizens would have received through GET /mail/messages (kept across restarts when
SANDBOX_STATE_DIR is set), and GET /mail/stats counts messages received twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session
from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from sandbox.state import open_state, transaction

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
    """Every message received, oldest first, in the sandbox's database (sandbox/state.py)."""

    def __init__(self, db: sqlite3.Connection | None = None) -> None:
        self._db = db or open_state()
        # Set through PUT /mail/behaviour: how late DATA is acknowledged.
        self.answer_delay_s = 0.0

    def add(self, mail_from: str, rcpt_tos: list[str], data: bytes) -> dict[str, Any]:
        """Keep a message, before the 250 that tells the client it was taken. Nothing is
        de-duplicated (SMTP cannot be): a message sent twice is here twice, same Message-ID."""
        parsed = BytesParser(policy=policy.default).parsebytes(data)
        assert isinstance(parsed, EmailMessage)  # guaranteed by policy.default
        headers: dict[str, str] = {}
        for name, value in parsed.items():
            decoded = str(value)
            # Repeated headers (Received, …) are kept, joined in their original order.
            headers[name] = f"{headers[name]}, {decoded}" if name in headers else decoded
        row = self._db.execute(
            """
            INSERT INTO mail_message (message_id, mail_from, rcpt_tos, subject, text, headers,
                received_at)
            VALUES (?, ?, ?, ?, ?, ?, ?)
            RETURNING *
            """,
            (
                str(parsed.get("Message-ID", "")),
                mail_from,
                json.dumps(list(rcpt_tos), ensure_ascii=False),
                str(parsed.get("Subject", "")),
                _plain_body(parsed),
                json.dumps(headers, ensure_ascii=False),
                datetime.now(UTC).isoformat(timespec="milliseconds"),
            ),
        ).fetchone()
        message = _message(row)
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
            rows = self._db.execute("SELECT * FROM mail_message ORDER BY id").fetchall()
        else:
            rows = self._db.execute(
                """
                SELECT * FROM mail_message m
                WHERE EXISTS (SELECT 1 FROM json_each(m.rcpt_tos) WHERE lower(value) = ?)
                ORDER BY id
                """,
                (to.strip().lower(),),
            ).fetchall()
        return [_message(row) for row in rows]

    def stats(self) -> dict[str, int]:
        """Messages kept, and how many of them repeat an earlier one's Message-ID (a client
        that sent the same message again: SMTP cannot tell, the count can)."""
        row = self._db.execute(
            "SELECT count(*), count(*) - count(DISTINCT nullif(message_id, '')) "
            "- sum(message_id = '') FROM mail_message"
        ).fetchone()
        return {"messages": row[0], "repeated_message_ids": row[1] or 0}

    def clear(self) -> None:
        with transaction(self._db) as db:
            db.execute("DELETE FROM mail_message")
            # Numbering starts again at 1, as in a fresh mailbox.
            db.execute("DELETE FROM sqlite_sequence WHERE name = 'mail_message'")
        self.answer_delay_s = 0.0


def _message(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "message_id": row["message_id"],
        "from": row["mail_from"],
        "to": json.loads(row["rcpt_tos"]),
        "subject": row["subject"],
        "text": row["text"],
        "headers": json.loads(row["headers"]),
        "received_at": row["received_at"],
    }


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

    @router.get("/stats")
    async def stats() -> dict[str, int]:
        return store.stats()

    @router.delete("/messages", status_code=204)
    async def clear_messages() -> Response:
        store.clear()
        return Response(status_code=204)

    @router.put("/behaviour")
    async def set_behaviour(body: MailBehaviourIn) -> dict[str, Any]:
        store.answer_delay_s = body.answer_delay_s
        return body.model_dump()

    return router
