"""Demo back-office of every receiving agency: takes dossier deliveries, reports steps done.

One app plays all agency codes. It behaves like a well-mannered real agency system: it
verifies the gateway's signature (Standard Webhooks, with the `standardwebhooks` library as
any agency would), de-duplicates deliveries by transfer id, acknowledges receipt and reports
the outcome back to the gateway's callback URLs, insisting until the gateway is reachable
again. Transfers arrive over HTTPS here, over gRPC and Kafka in sandbox/agency_inbox.py.
Tests steer its failures through the behaviour endpoint instead of patching anything.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

import aiohttp
from fastapi import APIRouter, Header, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from sandbox.agency_tokens import AgencyTokens, TokenRefused
from sandbox.settings import SandboxSettings

log = logging.getLogger("sandbox.agency")

FIRST_RETRY_S = 0.2
MAX_RETRY_S = 5.0
# Bounds one callback attempt so a hung gateway cannot stall the retry schedule.
ATTEMPT_TIMEOUT_S = 5.0


class DossierIn(BaseModel):
    code: str = Field(min_length=1)
    # Lenient on everything but the code: the agency only needs to recognise the dossier.
    procedure_code: str = ""
    receiving_agency_code: str = ""
    applicant: dict[str, Any] = Field(default_factory=dict)
    form_data: dict[str, Any] = Field(default_factory=dict)
    received_at: str = ""
    due_at: str = ""


class StepIn(BaseModel):
    index: int = 0
    name: str = ""
    agency_code: str = ""
    due_at: str = ""


class TransferIn(BaseModel):
    transfer_id: str = Field(min_length=1)
    dossier: DossierIn
    step: StepIn = Field(default_factory=StepIn)
    outcome_url: str = Field(min_length=1)
    acknowledgement_url: str = ""


class BehaviourIn(BaseModel):
    fail_next: int = Field(default=0, ge=0)
    fail_status: int = Field(default=503, ge=400, le=599)
    delay_s: float | None = Field(default=None, ge=0)
    # False: a silent agency that takes transfers but never acknowledges nor reports.
    acknowledge: bool = True
    # The next `hang_next` deliveries are answered 504 only after `hang_s`, untaken
    # (the gateway's client times out first).
    hang_next: int = Field(default=0, ge=0)
    hang_s: float = Field(default=0.0, ge=0, le=60)


class SignatureRefused(Exception):
    """The transfer is unsigned, or signed with another key, or altered: answered 401."""


@dataclass
class TransferRecord:
    transfer_id: str
    dossier_code: str
    step_index: int
    first_received_at: str
    deliveries: int = 1
    reported_at: str | None = None
    channel: str = "https"
    # The signature was checked (the sandbox has the agencies' secret) and matched.
    verified: bool = False
    acknowledged_at: str | None = None
    # An officer is working on it (acknowledging, then reporting): a duplicate adds nothing.
    in_hand: bool = False

    def as_json(self) -> dict[str, Any]:
        return {
            "transfer_id": self.transfer_id,
            "dossier_code": self.dossier_code,
            "step_index": self.step_index,
            "first_received_at": self.first_received_at,
            "deliveries": self.deliveries,
            "reported_at": self.reported_at,
            "channel": self.channel,
            "verified": self.verified,
            "acknowledged_at": self.acknowledged_at,
        }


@dataclass(frozen=True)
class Taken:
    """How the office answered a delivery: failing on purpose, a duplicate, or accepted."""

    status: str
    fail_status: int = 0


@dataclass
class AgencyState:
    transfers: dict[str, TransferRecord] = field(default_factory=dict)
    rejected: int = 0
    behaviour: BehaviourIn = field(default_factory=BehaviourIn)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class AgencyOffice:
    """State of all demo agencies plus the callbacks they still owe the gateway."""

    def __init__(self, settings: SandboxSettings) -> None:
        self._settings = settings
        self._agencies: dict[str, AgencyState] = {}
        # The event loop keeps only weak references to tasks; this set keeps callbacks alive.
        self._tasks: set[asyncio.Task[None]] = set()
        self._client: aiohttp.ClientSession | None = None
        self._tokens = AgencyTokens(settings.agency_token_url, settings.agency_clients, self._http)

    def _http(self) -> aiohttp.ClientSession:
        if self._client is None:
            # trust_env=False (the default): a proxy from the environment must not swallow
            # loopback callbacks.
            self._client = aiohttp.ClientSession()
        return self._client

    def _agency(self, agency_code: str) -> AgencyState:
        return self._agencies.setdefault(agency_code, AgencyState())

    async def close(self) -> None:
        await self._cancel_callbacks()
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def reset(self) -> None:
        await self._cancel_callbacks()
        self._agencies.clear()

    async def _cancel_callbacks(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()

    def verify(self, body: bytes, headers: Mapping[str, str]) -> bool:
        """True when the signature matches; False when the sandbox has no secret to check."""
        if not self._settings.agency_secret:
            return False
        try:
            Webhook(self._settings.agency_secret).verify(body, dict(headers), json_parse=False)
        except (WebhookVerificationError, ValueError) as exc:
            raise SignatureRefused(str(exc)) from None
        return True

    async def hung(self, agency_code: str) -> bool:
        """Stuck on purpose: answers late, and without having taken the transfer."""
        behaviour = self._agency(agency_code).behaviour
        if behaviour.hang_next <= 0:
            return False
        behaviour.hang_next -= 1
        await asyncio.sleep(behaviour.hang_s)
        return True

    def record_of(self, agency_code: str, transfer_id: str) -> TransferRecord | None:
        return self._agency(agency_code).transfers.get(transfer_id)

    def take(
        self, agency_code: str, transfer_id: str, body: TransferIn, channel: str, verified: bool
    ) -> Taken:
        agency = self._agency(agency_code)
        behaviour = agency.behaviour
        who = f"{agency_code}/{transfer_id}"
        if behaviour.fail_next > 0:
            behaviour.fail_next -= 1
            agency.rejected += 1
            log.info("transfer %s rejected with %d on request", who, behaviour.fail_status)
            return Taken("failing", behaviour.fail_status)
        record = agency.transfers.get(transfer_id)
        if record is not None:
            record.deliveries += 1
            log.info("transfer %s is a duplicate (delivery %d)", who, record.deliveries)
            if behaviour.acknowledge and record.reported_at is None and not record.in_hand:
                # Taken while the office was silent: it picks the dossier up now.
                delay = self._delay(behaviour)
                note = f"Đã giải quyết xong bước {body.step.name}".rstrip()
                self._spawn(who, self._work(who, record, body, note, delay))
            elif behaviour.acknowledge and record.acknowledged_at is None:
                self._spawn(who, self._acknowledge(who, record, body.acknowledgement_url))
            return Taken("duplicate")

        record = TransferRecord(
            transfer_id=transfer_id,
            dossier_code=body.dossier.code,
            step_index=body.step.index,
            first_received_at=_now(),
            channel=channel,
            verified=verified,
        )
        agency.transfers[transfer_id] = record
        log.info(
            "transfer %s accepted over %s: dossier %s, step %d",
            who,
            channel,
            body.dossier.code,
            body.step.index,
        )
        if not behaviour.acknowledge:
            return Taken("accepted")  # a silent agency: nobody picks the transfer up
        note = f"Đã giải quyết xong bước {body.step.name}".rstrip()
        self._spawn(who, self._work(who, record, body, note, self._delay(behaviour)))
        return Taken("accepted")

    def _delay(self, behaviour: BehaviourIn) -> float:
        return self._settings.agency_delay_s if behaviour.delay_s is None else behaviour.delay_s

    def _spawn(self, who: str, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work, name=f"callback {who}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _work(
        self, who: str, record: TransferRecord, body: TransferIn, note: str, delay: float
    ) -> None:
        record.in_hand = True
        try:
            await self._acknowledge(who, record, body.acknowledgement_url)
            await self._report(who, record, body.outcome_url, note, delay)
        finally:
            record.in_hand = False

    async def _acknowledge(self, who: str, record: TransferRecord, url: str) -> None:
        # Over gRPC the receipt was the acknowledgement: there is no URL to call.
        if (
            url
            and record.acknowledged_at is None
            and await self._call_back(who, "acknowledgement", url, {}, record.transfer_id)
        ):
            record.acknowledged_at = _now()

    async def _report(
        self, who: str, record: TransferRecord, url: str, note: str, delay: float
    ) -> None:
        await asyncio.sleep(delay)
        payload = {"outcome": "done", "note": note}
        if await self._call_back(who, "outcome", url, payload, record.transfer_id):
            record.reported_at = _now()

    async def _call_back(
        self, who: str, what: str, url: str, payload: dict[str, Any], transfer_id: str
    ) -> bool:
        """POST to the gateway until it answers 2xx (True) or 4xx, or time runs out."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.callback_timeout_s
        # The same key on every attempt lets the gateway drop a retry it already applied.
        headers = {"Idempotency-Key": transfer_id}
        agency_code = who.partition("/")[0]
        wait = FIRST_RETRY_S
        attempt = 0
        while True:
            attempt += 1
            timeout = max(0.1, min(ATTEMPT_TIMEOUT_S, deadline - loop.time()))
            try:
                headers |= await self._tokens.authorization(agency_code)
                async with self._http().post(
                    url,
                    json=payload,
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=timeout),
                ) as response:
                    status, text = response.status, (await response.text())[:200]
            except aiohttp.InvalidURL as exc:
                log.error("transfer %s: cannot call back %s: %s", who, url, exc)
                return False
            except (aiohttp.ClientError, TimeoutError, TokenRefused) as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if 200 <= status < 300:
                    log.info("transfer %s: %s sent (attempt %d)", who, what, attempt)
                    return True
                if status == 401 and attempt == 1:
                    # Our cached token may predate a key rotation: one more try with a new one.
                    self._tokens.forget(agency_code)
                elif status < 500:
                    # A 4xx will not change by asking again; the gateway refused this call.
                    log.warning("transfer %s: %s refused with %d %s", who, what, status, text)
                    return False
                problem = f"HTTP {status}"
            if loop.time() + wait > deadline:
                log.error(
                    "transfer %s: %s gave up after %d attempts: %s", who, what, attempt, problem
                )
                return False
            log.debug(
                "transfer %s: %s attempt %d failed (%s), retry in %.1f s",
                who,
                what,
                attempt,
                problem,
                wait,
            )
            await asyncio.sleep(wait)
            wait = min(wait * 2, MAX_RETRY_S)

    def set_behaviour(self, agency_code: str, behaviour: BehaviourIn) -> dict[str, Any]:
        # A copy, so the countdown never mutates the caller's model.
        self._agency(agency_code).behaviour = behaviour.model_copy()
        return {"agency_code": agency_code, **behaviour.model_dump()}

    def transfers(self, agency_code: str) -> list[dict[str, Any]]:
        agency = self._agencies.get(agency_code)
        if agency is None:
            return []
        return [record.as_json() for record in agency.transfers.values()]

    def summary(self) -> dict[str, dict[str, int]]:
        return {
            code: {
                "transfers": len(agency.transfers),
                "deliveries": sum(r.deliveries for r in agency.transfers.values()),
                "rejected": agency.rejected,
            }
            for code, agency in self._agencies.items()
        }


def agency_router(office: AgencyOffice) -> APIRouter:
    router = APIRouter(prefix="/agencies", tags=["agencies"])

    @router.post(
        "/{agency_code}/transfers",
        status_code=202,
        openapi_extra={"requestBody": {"content": {"application/json": {}}, "required": True}},
    )
    async def deliver(
        agency_code: str,
        request: Request,
        idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
    ) -> JSONResponse:
        """A TransferIn, signed with the webhook-* headers when the sandbox has a secret."""
        raw = await request.body()
        try:
            verified = office.verify(raw, request.headers)
        except SignatureRefused as exc:
            log.warning("transfer to %s refused: bad signature (%s)", agency_code, exc)
            return JSONResponse(status_code=401, content={"detail": f"bad signature: {exc}"})
        try:
            body = TransferIn.model_validate_json(raw)
        except ValidationError as exc:
            return JSONResponse(status_code=422, content={"detail": exc.errors(include_url=False)})
        if await office.hung(agency_code):
            return JSONResponse(status_code=504, content={"detail": "the agency is stuck"})
        taken = office.take(
            agency_code, idempotency_key or body.transfer_id, body, "https", verified
        )
        if taken.status == "failing":
            return JSONResponse(
                status_code=taken.fail_status,
                content={"detail": f"agency {agency_code} is failing on purpose"},
            )
        if taken.status == "duplicate":
            return JSONResponse(status_code=200, content={"status": "duplicate"})
        transfer_id = idempotency_key or body.transfer_id
        return JSONResponse(
            status_code=202, content={"transfer_id": transfer_id, "status": "accepted"}
        )

    @router.get("/{agency_code}/transfers")
    async def list_transfers(agency_code: str) -> list[dict[str, Any]]:
        return office.transfers(agency_code)

    @router.put("/{agency_code}/behaviour")
    async def set_behaviour(agency_code: str, body: BehaviourIn) -> dict[str, Any]:
        return office.set_behaviour(agency_code, body)

    @router.get("")
    async def summary() -> dict[str, dict[str, int]]:
        return office.summary()

    @router.delete("", status_code=204)
    async def reset() -> Response:
        await office.reset()
        return Response(status_code=204)

    return router
