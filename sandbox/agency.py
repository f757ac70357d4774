"""Demo back-office of every receiving agency: takes dossier deliveries, reports steps done.

One app plays all agency codes. It behaves like a well-mannered real agency system: it
verifies the gateway's signature (Standard Webhooks, with the `standardwebhooks` library as
any agency would), de-duplicates deliveries by transfer id, acknowledges receipt and reports
the outcome back to the gateway's callback URLs, insisting until the gateway is reachable
again. What it took and what it still owes survive a kill (sandbox/agency_ledger.py).
Transfers arrive over HTTPS here, over gRPC and Kafka in sandbox/agency_inbox.py.
Tests steer its failures through the behaviour endpoint instead of patching anything.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

import aiohttp
from fastapi import APIRouter, Header, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from sandbox.agency_callbacks import AgencyCallbacks
from sandbox.agency_ledger import AgencyLedger, Owed, TransferRecord
from sandbox.agency_tokens import AgencyTokens
from sandbox.settings import SandboxSettings
from sandbox.telemetry import carrier_of

log = logging.getLogger("sandbox.agency")


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


@dataclass(frozen=True)
class Taken:
    """How the office answered a delivery: failing on purpose, a duplicate, or accepted."""

    status: str
    fail_status: int = 0


@dataclass
class AgencyState:
    """What a restart may forget: the failures tests asked for, and how many were served."""

    rejected: int = 0
    behaviour: BehaviourIn = field(default_factory=BehaviourIn)


class AgencyOffice:
    """All demo agencies: their ledger of transfers and owed callbacks (kept in the sandbox's
    database), and the tasks working through those callbacks."""

    def __init__(self, settings: SandboxSettings, ledger: AgencyLedger) -> None:
        self._settings = settings
        self._ledger = ledger
        self._agencies: dict[str, AgencyState] = {}
        # The transfers whose callbacks a task is working through, one task per transfer.
        # (The event loop keeps only weak references to tasks; this keeps them alive.)
        self._working: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._client: aiohttp.ClientSession | None = None
        self._tokens = AgencyTokens(settings.agency_token_url, settings.agency_clients, self._http)
        self._callbacks = AgencyCallbacks(self._tokens, settings.callback_timeout_s)

    def _http(self) -> aiohttp.ClientSession:
        if self._client is None:
            # trust_env=False (the default): a proxy from the environment must not swallow
            # loopback callbacks.
            self._client = aiohttp.ClientSession()
        return self._client

    def _agency(self, agency_code: str) -> AgencyState:
        return self._agencies.setdefault(agency_code, AgencyState())

    def resume(self) -> int:
        """Take up the callbacks owed before the last stop (or kill); how many transfers."""
        keys = dict.fromkeys((o.agency_code, o.transfer_id) for o in self._ledger.owed())
        for agency_code, transfer_id in keys:
            self._work_through(agency_code, transfer_id)
        if keys:
            log.info("resuming the callbacks owed for %d transfers", len(keys))
        return len(keys)

    async def close(self) -> None:
        # The owed callbacks stay in the ledger: the next start resumes them.
        await self._cancel_callbacks()
        await self._callbacks.close()
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def reset(self) -> None:
        await self._cancel_callbacks()
        self._agencies.clear()
        self._ledger.clear()

    async def _cancel_callbacks(self) -> None:
        tasks = list(self._working.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._working.clear()

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
        return self._ledger.record(agency_code, transfer_id)

    def acknowledged(self, agency_code: str, transfer_id: str) -> None:
        self._ledger.acknowledged(agency_code, transfer_id)

    def take(
        self,
        agency_code: str,
        transfer_id: str,
        body: TransferIn,
        channel: str,
        verified: bool,
        headers: Mapping[str, str],
    ) -> Taken:
        """Record the delivery durably, then say how to answer it (never the other way).
        `headers` (HTTP, Kafka or gRPC metadata) carry the trace its callbacks continue."""
        agency = self._agency(agency_code)
        behaviour = agency.behaviour
        who = f"{agency_code}/{transfer_id}"
        if behaviour.fail_next > 0:
            behaviour.fail_next -= 1
            agency.rejected += 1
            log.info("transfer %s rejected with %d on request", who, behaviour.fail_status)
            return Taken("failing", behaviour.fail_status)
        record, new = self._ledger.receive(
            agency_code,
            transfer_id,
            dossier_code=body.dossier.code,
            step_index=body.step.index,
            channel=channel,
            verified=verified,
            owed=self._to_do(agency_code, transfer_id, body, behaviour, headers),
        )
        if not new:
            log.info("transfer %s is a duplicate (delivery %d)", who, record.deliveries)
            if behaviour.acknowledge and not self._ledger.owed(agency_code, transfer_id):
                # Nobody has it in hand (taken while silent, or its callbacks given up): the
                # office picks it up now, owing whatever it has not told the gateway yet.
                told = {"acknowledgement": record.acknowledged_at, "outcome": record.reported_at}
                to_do = self._to_do(agency_code, transfer_id, body, behaviour, headers)
                self._ledger.owe([c for c in to_do if told[c.what] is None])
                self._work_through(agency_code, transfer_id)
            return Taken("duplicate")
        log.info(
            "transfer %s accepted over %s: dossier %s, step %d",
            who,
            channel,
            body.dossier.code,
            body.step.index,
        )
        self._work_through(agency_code, transfer_id)
        return Taken("accepted")

    def _to_do(
        self,
        agency_code: str,
        transfer_id: str,
        body: TransferIn,
        behaviour: BehaviourIn,
        headers: Mapping[str, str],
    ) -> list[Owed]:
        """The callbacks a new transfer calls for: none from a silent agency, else its
        acknowledgement (over gRPC the receipt is one: no URL) and, after the work, the
        outcome."""
        if not behaviour.acknowledge:
            return []
        delay = self._settings.agency_delay_s if behaviour.delay_s is None else behaviour.delay_s
        note = f"Đã giải quyết xong bước {body.step.name}".rstrip()
        now = time.time()
        report = {"outcome": "done", "note": note}
        trace = carrier_of(headers)
        url = body.outcome_url
        owed = [Owed(agency_code, transfer_id, "outcome", url, report, now + delay, trace)]
        if url := body.acknowledgement_url:
            owed.insert(0, Owed(agency_code, transfer_id, "acknowledgement", url, {}, now, trace))
        return owed

    def _work_through(self, agency_code: str, transfer_id: str) -> None:
        key = (agency_code, transfer_id)
        if key not in self._working:
            task = asyncio.create_task(self._settle(key), name=f"callbacks {'/'.join(key)}")
            self._working[key] = task

    async def _settle(self, key: tuple[str, str]) -> None:
        """Send a transfer's owed callbacks in order, striking each off once answered."""
        who = "/".join(key)
        try:
            while owed := self._ledger.owed(*key):
                callback = owed[0]
                await asyncio.sleep(max(0.0, callback.due_at - time.time()))
                self._ledger.settle(callback, await self._callbacks.send(who, callback))
        finally:
            # Here rather than in a done callback (which runs a loop turn later): a callback
            # owed from now on finds no task and starts one.
            self._working.pop(key, None)

    def set_behaviour(self, agency_code: str, behaviour: BehaviourIn) -> dict[str, Any]:
        # A copy, so the countdown never mutates the caller's model.
        self._agency(agency_code).behaviour = behaviour.model_copy()
        return {"agency_code": agency_code, **behaviour.model_dump()}

    def transfers(self, agency_code: str) -> list[dict[str, Any]]:
        return [record.as_json() for record in self._ledger.transfers(agency_code)]

    def owed(self) -> list[dict[str, Any]]:
        """The callbacks still owed to the gateway, all agencies: empty once all is told."""
        return [
            {"agency_code": o.agency_code, "transfer_id": o.transfer_id, "what": o.what}
            for o in self._ledger.owed()
        ]

    def summary(self) -> dict[str, dict[str, int]]:
        taken = self._ledger.summary()
        codes = [*taken, *(code for code in self._agencies if code not in taken)]
        return {
            code: {
                "transfers": taken.get(code, (0, 0))[0],
                "deliveries": taken.get(code, (0, 0))[1],
                "rejected": self._agencies[code].rejected if code in self._agencies else 0,
            }
            for code in codes
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
        transfer_id = idempotency_key or body.transfer_id
        taken = office.take(agency_code, transfer_id, body, "https", verified, request.headers)
        if taken.status == "failing":
            return JSONResponse(
                status_code=taken.fail_status,
                content={"detail": f"agency {agency_code} is failing on purpose"},
            )
        if taken.status == "duplicate":
            return JSONResponse(status_code=200, content={"status": "duplicate"})
        return JSONResponse(
            status_code=202, content={"transfer_id": transfer_id, "status": "accepted"}
        )

    @router.get("/{agency_code}/transfers")
    async def list_transfers(agency_code: str) -> list[dict[str, Any]]:
        return office.transfers(agency_code)

    @router.put("/{agency_code}/behaviour")
    async def set_behaviour(agency_code: str, body: BehaviourIn) -> dict[str, Any]:
        return office.set_behaviour(agency_code, body)

    @router.get("/owed")
    async def owed() -> list[dict[str, Any]]:
        return office.owed()

    @router.get("")
    async def summary() -> dict[str, dict[str, int]]:
        return office.summary()

    @router.delete("", status_code=204)
    async def reset() -> Response:
        await office.reset()
        return Response(status_code=204)

    return router
