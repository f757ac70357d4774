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
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError

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


@dataclass
class SmsStore:
    """Every accepted message, oldest first, and the failures asked for."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    by_reference: dict[str, dict[str, Any]] = field(default_factory=dict)
    behaviour: BehaviourIn = field(default_factory=BehaviourIn)
    rejected: int = 0
    # Requests that were resends of an accepted reference (answered, never billed twice).
    resends: int = 0

    def accept(self, message: MessageIn) -> dict[str, Any]:
        encoding, count = segments(message.text)
        record = {
            "id": str(uuid.uuid4()),
            "to": message.to,
            "text": message.text,
            "reference": message.reference,
            "encoding": encoding,
            "segments": count,
            "received_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
        }
        self.messages.append(record)
        self.by_reference[message.reference] = record
        log.info("sms %s to %s (%d segments): %s", record["id"], message.to, count, message.text)
        return record

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
        self.messages.clear()
        self.by_reference.clear()
        self.behaviour = BehaviourIn()
        self.rejected = 0
        self.resends = 0


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
        first = store.by_reference.get(message.reference)
        if first is None:
            record = store.accept(message)
            if store.behaviour.answer_delay_s:
                await asyncio.sleep(store.behaviour.answer_delay_s)
            return _answer(record, 202, duplicate=False)
        if (first["to"], first["text"]) != (message.to, message.text):
            # The same reference for another message is a client bug, not a resend.
            return _error(409, "reference-reused", f"reference {message.reference} was used")
        store.resends += 1
        log.info("sms reference %s is a resend of %s", message.reference, first["id"])
        return _answer(first, 200, duplicate=True)

    @router.get("/messages")
    async def list_messages(to: str | None = None) -> list[dict[str, Any]]:
        if to is None:
            return list(store.messages)
        # An unencoded "+" in a query string arrives as a space: accept both spellings.
        wanted = "+" + to.strip().lstrip("+")
        return [m for m in store.messages if m["to"] == wanted]

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
