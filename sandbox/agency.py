"""Demo back-office of every receiving agency: takes dossier deliveries, reports steps done.

One app plays all agency codes. It behaves like a well-mannered real agency system: it
de-duplicates deliveries by transfer id and reports the outcome back to the gateway's
callback URL, insisting until the gateway is reachable again. Tests steer its failures
through the behaviour endpoint instead of patching anything.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

import aiohttp
from fastapi import APIRouter, Header, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

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


class BehaviourIn(BaseModel):
    fail_next: int = Field(default=0, ge=0)
    fail_status: int = Field(default=503, ge=400, le=599)
    delay_s: float | None = Field(default=None, ge=0)


@dataclass
class TransferRecord:
    transfer_id: str
    dossier_code: str
    step_index: int
    first_received_at: str
    deliveries: int = 1
    reported_at: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "transfer_id": self.transfer_id,
            "dossier_code": self.dossier_code,
            "step_index": self.step_index,
            "first_received_at": self.first_received_at,
            "deliveries": self.deliveries,
            "reported_at": self.reported_at,
        }


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

    def receive(self, agency_code: str, transfer_id: str, body: TransferIn) -> JSONResponse:
        agency = self._agency(agency_code)
        behaviour = agency.behaviour
        who = f"{agency_code}/{transfer_id}"
        if behaviour.fail_next > 0:
            behaviour.fail_next -= 1
            agency.rejected += 1
            log.info("transfer %s rejected with %d on request", who, behaviour.fail_status)
            return JSONResponse(
                status_code=behaviour.fail_status,
                content={"detail": f"agency {agency_code} is failing on purpose"},
            )
        record = agency.transfers.get(transfer_id)
        if record is not None:
            record.deliveries += 1
            log.info("transfer %s is a duplicate (delivery %d)", who, record.deliveries)
            return JSONResponse(status_code=200, content={"status": "duplicate"})

        record = TransferRecord(
            transfer_id=transfer_id,
            dossier_code=body.dossier.code,
            step_index=body.step.index,
            first_received_at=_now(),
        )
        agency.transfers[transfer_id] = record
        delay = self._settings.agency_delay_s if behaviour.delay_s is None else behaviour.delay_s
        note = f"Đã giải quyết xong bước {body.step.name}".rstrip()
        task = asyncio.create_task(
            self._report(who, record, body.outcome_url, note, delay), name=f"callback {who}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        log.info(
            "transfer %s accepted: dossier %s, step %d", who, body.dossier.code, body.step.index
        )
        return JSONResponse(
            status_code=202, content={"transfer_id": transfer_id, "status": "accepted"}
        )

    async def _report(
        self, who: str, record: TransferRecord, url: str, note: str, delay: float
    ) -> None:
        await asyncio.sleep(delay)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.callback_timeout_s
        payload = {"outcome": "done", "note": note}
        # The same key on every attempt lets the gateway drop a retry it already applied.
        headers = {"Idempotency-Key": record.transfer_id}
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
                return
            except (aiohttp.ClientError, TimeoutError, TokenRefused) as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if 200 <= status < 300:
                    record.reported_at = _now()
                    log.info("transfer %s reported done (attempt %d)", who, attempt)
                    return
                if status == 401 and attempt == 1:
                    # Our cached token may predate a key rotation: one more try with a new one.
                    self._tokens.forget(agency_code)
                elif status < 500:
                    # A 4xx will not change by asking again; the gateway refused this outcome.
                    log.warning("transfer %s: callback refused with %d %s", who, status, text)
                    return
                problem = f"HTTP {status}"
            if loop.time() + wait > deadline:
                log.error("transfer %s: gave up after %d attempts: %s", who, attempt, problem)
                return
            log.debug(
                "transfer %s: attempt %d failed (%s), retry in %.1f s", who, attempt, problem, wait
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

    @router.post("/{agency_code}/transfers", status_code=202)
    async def deliver(
        agency_code: str,
        body: TransferIn,
        idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
    ) -> JSONResponse:
        return office.receive(agency_code, idempotency_key or body.transfer_id, body)

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
