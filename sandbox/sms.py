"""Stand-in SMS gateway: takes messages over HTTP, keeps them for inspection, fails on request.

It behaves like the HTTP gateways of Vietnamese carriers and brandname-SMS providers: an
API key per client, E.164 recipients, a client reference that makes a resend harmless, and
the count of billed segments. Tests steer its failures through PUT /sms/behaviour instead
of patching anything: 503 and 429 stand for temporary trouble, 400 for a refusal, and a
delayed answer (the message kept, the answer late) for a client that dies mid-request.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError

from sandbox.state import open_state

log = logging.getLogger("sandbox.sms")

MAX_TEXT = 1600
# "+" and 8 to 15 digits, the first not 0 (ITU-T E.164).
E164 = r"^\+[1-9][0-9]{7,14}$"

# The GSM 03.38 default alphabet; one character of its extension table costs two septets.
_GSM7 = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXTENSION = frozenset("^{}\\[~]|€\f")


def segments(text: str) -> tuple[Literal["gsm7", "ucs2"], int]:
    """Encoding and number of billed SMS segments of a text.

    Plain Latin fits GSM-7: 160 septets alone, 153 per part once split (the rest carries
    the concatenation header). One Vietnamese diacritic forces UCS-2 for the whole text:
    70 UTF-16 units alone, 67 per part.
    """
    if all(c in _GSM7 or c in _GSM7_EXTENSION for c in text):
        units = sum(2 if c in _GSM7_EXTENSION else 1 for c in text)
        return "gsm7", 1 if units <= 160 else -(-units // 153)
    units = len(text.encode("utf-16-le")) // 2  # characters beyond the BMP take two
    return "ucs2", 1 if units <= 70 else -(-units // 67)


class MessageIn(BaseModel):
    to: str = Field(pattern=E164)
    text: str = Field(min_length=1, max_length=MAX_TEXT)
    reference: str = Field(min_length=1, max_length=100)


class BehaviourIn(BaseModel):
    fail_next: int = Field(default=0, ge=0)
    fail_status: Literal[400, 429, 503] = 503
    fail_all: bool = False
    # Keep each accepted message, then answer this late: a client killed meanwhile has
    # been heard but never learns it, and must resend with the same reference.
    answer_delay_s: float = Field(default=0.0, ge=0, le=30)


class SmsStore:
    """Every accepted message, oldest first, in the sandbox's database (sandbox/state.py),
    and the failures asked for (in memory: a restart forgets what the tests steered)."""

    def __init__(self, db: sqlite3.Connection | None = None) -> None:
        self._db = db or open_state()
        self.behaviour = BehaviourIn()
        self.rejected = 0

    def accept(self, message: MessageIn) -> dict[str, Any]:
        """Keep a message under its reference, before answering that it was accepted."""
        encoding, count = segments(message.text)
        row = self._db.execute(
            """
            INSERT INTO sms_message (id, reference, recipient, text, encoding, segments,
                received_at)
            VALUES (?, ?, ?, ?, ?, ?, ?)
            RETURNING *
            """,
            (
                str(uuid.uuid4()),
                message.reference,
                message.to,
                message.text,
                encoding,
                count,
                datetime.now(UTC).isoformat(timespec="milliseconds"),
            ),
        ).fetchone()
        record = _record(row)
        log.info("sms %s to %s (%d segments): %s", record["id"], message.to, count, message.text)
        return record

    def by_reference(self, reference: str) -> dict[str, Any] | None:
        row = self._db.execute(
            "SELECT * FROM sms_message WHERE reference = ?", (reference,)
        ).fetchone()
        return None if row is None else _record(row)

    def resent(self, reference: str) -> None:
        self._db.execute(
            "UPDATE sms_message SET resends = resends + 1 WHERE reference = ?", (reference,)
        )

    @property
    def resends(self) -> int:
        """Requests that were resends of an accepted reference (answered, never billed twice)."""
        (total,) = self._db.execute("SELECT coalesce(sum(resends), 0) FROM sms_message").fetchone()
        return int(total)

    @property
    def messages(self) -> list[dict[str, Any]]:
        """Every accepted message, oldest first."""
        return self.addressed_to(None)

    def addressed_to(self, to: str | None) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT * FROM sms_message WHERE ?1 IS NULL OR recipient = ?1 ORDER BY seq", (to,)
        ).fetchall()
        return [_record(row) for row in rows]

    def failure(self) -> int | None:
        """The status to fail this request with, if the tests asked for one."""
        behaviour = self.behaviour
        if behaviour.fail_all:
            return behaviour.fail_status
        if behaviour.fail_next > 0:
            behaviour.fail_next -= 1
            return behaviour.fail_status
        return None

    def reset(self) -> None:
        self._db.execute("DELETE FROM sms_message")
        self.behaviour = BehaviourIn()
        self.rejected = 0


def _record(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "to": row["recipient"],
        "text": row["text"],
        "reference": row["reference"],
        "encoding": row["encoding"],
        "segments": row["segments"],
        "received_at": row["received_at"],
        "resends": row["resends"],
    }


def _error(status: int, code: str, detail: Any) -> JSONResponse:
    headers = {"Retry-After": "1"} if status == 429 else None
    return JSONResponse(
        status_code=status, content={"error": code, "detail": detail}, headers=headers
    )


def _answer(record: dict[str, Any], status: int, duplicate: bool) -> JSONResponse:
    content = {
        "id": record["id"],
        "status": "accepted",
        "segments": record["segments"],
        "duplicate": duplicate,
    }
    return JSONResponse(status_code=status, content=content)


def sms_router(store: SmsStore) -> APIRouter:
    router = APIRouter(prefix="/sms", tags=["sms"])

    @router.post("/messages", status_code=202)
    async def send(
        request: Request, api_key: Annotated[str | None, Header(alias="X-Api-Key")] = None
    ) -> JSONResponse:
        if not api_key or not api_key.strip():
            return _error(401, "unauthorized", "the X-Api-Key header is required")
        # Validated here rather than by FastAPI, whose 422 no SMS gateway answers with.
        try:
            message = MessageIn.model_validate_json(await request.body())
        except ValidationError as exc:
            problems = [
                {"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]}
                for e in exc.errors(include_url=False, include_input=False)
            ]
            return _error(400, "invalid-request", problems)
        failure = store.failure()
        if failure is not None:
            store.rejected += 1
            log.info("sms to %s rejected with %d on request", message.to, failure)
            return _error(failure, "failing-on-purpose", "the SMS sandbox was told to fail")
        first = store.by_reference(message.reference)
        if first is None:
            record = store.accept(message)
            if store.behaviour.answer_delay_s:
                await asyncio.sleep(store.behaviour.answer_delay_s)
            return _answer(record, 202, duplicate=False)
        if (first["to"], first["text"]) != (message.to, message.text):
            # The same reference for another message is a client bug, not a resend.
            return _error(409, "reference-reused", f"reference {message.reference} was used")
        store.resent(message.reference)
        log.info("sms reference %s is a resend of %s", message.reference, first["id"])
        return _answer(first, 200, duplicate=True)

    @router.get("/messages")
    async def list_messages(to: str | None = None) -> list[dict[str, Any]]:
        if to is None:
            return store.messages
        # An unencoded "+" in a query string arrives as a space: accept both spellings.
        return store.addressed_to("+" + to.strip().lstrip("+"))

    @router.delete("/messages", status_code=204)
    async def reset() -> Response:
        store.reset()
        return Response(status_code=204)

    @router.put("/behaviour")
    async def set_behaviour(body: BehaviourIn) -> dict[str, Any]:
        # A copy, so the countdown never mutates the caller's model.
        store.behaviour = body.model_copy()
        return {**body.model_dump(), "rejected": store.rejected, "resends": store.resends}

    return router
