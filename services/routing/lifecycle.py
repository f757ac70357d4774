"""The dossier state machine: internal states, their national status codes, and the one
place where a dossier changes state.

The national portal's codes 1-10 (proto DossierStatus) are the external contract. Inside,
two things are kept apart from the state because they cut across it: the deadline clock
(stopped while the citizen supplements) and the overdue flag (a processing dossier can be
late). A transition not in the table is refused with InvalidTransition, which the HTTP API
answers with 409 naming both states.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Literal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core.events import Event, new_event
from core.outbox import Outbox
from core.problems import Problem
from core.storage import rowcount
from gateway.v1 import dossier_pb2, events_pb2
from services.routing.models import TransferStatus, journeys, status_changes, transfers
from services.routing.rows import JourneyRow, Json, TransferRow

SOURCE = "/gateway/routing"


# The national portal's status codes 1-10 (proto gateway.v1.DossierStatus), as the APIs show them.
NationalStatus = Literal[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]


class State(StrEnum):
    REGISTERED = "registered"
    RECEIVED = "received"
    PROCESSING = "processing"
    SUPPLEMENT_REQUESTED = "supplement_requested"
    FEES_DUE = "fees_due"
    WITHDRAWN = "withdrawn"
    STOPPED = "stopped"
    REFUSED = "refused"
    DECIDED = "decided"
    RESULT_RETURNED = "result_returned"


NATIONAL: dict[State, dossier_pb2.DossierStatus.ValueType] = {
    State.REGISTERED: dossier_pb2.DOSSIER_STATUS_REGISTERED,
    State.RECEIVED: dossier_pb2.DOSSIER_STATUS_RECEIVED,
    State.REFUSED: dossier_pb2.DOSSIER_STATUS_REFUSED,
    State.PROCESSING: dossier_pb2.DOSSIER_STATUS_PROCESSING,
    State.SUPPLEMENT_REQUESTED: dossier_pb2.DOSSIER_STATUS_SUPPLEMENT_REQUESTED,
    State.FEES_DUE: dossier_pb2.DOSSIER_STATUS_FEES_DUE,
    State.WITHDRAWN: dossier_pb2.DOSSIER_STATUS_WITHDRAWN,
    State.STOPPED: dossier_pb2.DOSSIER_STATUS_STOPPED,
    State.DECIDED: dossier_pb2.DOSSIER_STATUS_DECIDED,
    State.RESULT_RETURNED: dossier_pb2.DOSSIER_STATUS_RESULT_RETURNED,
}

# Where each state may go. Refusal can come from any agency of the journey while the
# dossier is open; a decided dossier only waits for its result to be handed over.
TRANSITIONS: dict[State, frozenset[State]] = {
    State.REGISTERED: frozenset({State.RECEIVED, State.REFUSED, State.WITHDRAWN}),
    State.RECEIVED: frozenset({State.PROCESSING, State.REFUSED, State.WITHDRAWN}),
    State.PROCESSING: frozenset(
        {
            State.SUPPLEMENT_REQUESTED,
            State.FEES_DUE,
            State.REFUSED,
            State.STOPPED,
            State.WITHDRAWN,
            State.DECIDED,
        }
    ),
    State.SUPPLEMENT_REQUESTED: frozenset(
        {State.PROCESSING, State.REFUSED, State.STOPPED, State.WITHDRAWN}
    ),
    State.FEES_DUE: frozenset({State.PROCESSING, State.STOPPED, State.WITHDRAWN}),
    State.DECIDED: frozenset({State.RESULT_RETURNED}),
    State.REFUSED: frozenset(),
    State.WITHDRAWN: frozenset(),
    State.STOPPED: frozenset(),
    State.RESULT_RETURNED: frozenset(),
}

# States in which agencies still work on the dossier (statistics: "in progress").
OPEN_STATES = frozenset(
    {State.RECEIVED, State.PROCESSING, State.SUPPLEMENT_REQUESTED, State.FEES_DUE}
)


class InvalidTransition(Problem):
    def __init__(self, code: str, current: State, requested: State) -> None:
        super().__init__(
            409,
            "invalid-status-transition",
            "The dossier cannot move to the requested status",
            f"dossier {code} is {current.value} ({NATIONAL[current]}); "
            f"it cannot become {requested.value} ({NATIONAL[requested]})",
            current_state=current.value,
            current_status=NATIONAL[current],
            requested_state=requested.value,
            requested_status=NATIONAL[requested],
        )


def check_transition(code: str, current: State, requested: State) -> None:
    if requested not in TRANSITIONS[current]:
        raise InvalidTransition(code, current, requested)


class TransitionLost(Exception):
    """A concurrent writer moved the row first: the caller's transaction must roll back."""


# Every state change is a conditional UPDATE checked by its row count: it applies only if
# the row is still in the state the caller read, so of concurrent writers exactly one wins,
# on PostgreSQL and on SQLite alike (pysqlite ignores FOR UPDATE and begins a transaction
# only at the first write, so a read-then-write would let two writers both pass).


async def claim(session: AsyncSession, code: str, current: State, to: State) -> None:
    """Move the dossier from `current` to `to`, or raise InvalidTransition naming the
    state a concurrent writer left it in."""
    check_transition(code, current, to)
    moved = await session.execute(
        journeys.update()
        .where(journeys.c.code == code, journeys.c.status == current.value)
        .values(status=to.value)
    )
    if rowcount(moved) != 1:
        now_in = await session.scalar(select(journeys.c.status).where(journeys.c.code == code))
        raise InvalidTransition(code, State(now_in or current.value), to)


async def claim_transfer(session: AsyncSession, transfer: TransferRow, to: TransferStatus) -> None:
    """Move a transfer from the status the caller read to `to`, or raise TransitionLost."""
    moved = await session.execute(
        transfers.update()
        .where(
            transfers.c.transfer_id == transfer.transfer_id,
            transfers.c.status == transfer.status,
        )
        .values(status=to)
    )
    if rowcount(moved) != 1:
        raise TransitionLost(f"transfer {transfer.transfer_id} is no longer {transfer.status}")


@dataclass(frozen=True)
class DossierFacts:
    """What a status change announces about the dossier, after the change's own updates."""

    code: str
    procedure_code: str
    state: State
    received_at: datetime
    due_at: datetime
    finished_at: datetime | None = None


async def transition(
    session: AsyncSession,
    outbox: Outbox,
    dossier: DossierFacts,
    to: State,
    *,
    agency_code: str,
    now: datetime,
    reason: str = "",
    details: Json | None = None,
    trace: dict[str, str] | None = None,
) -> DossierFacts:
    """Move the dossier to `to`: its row, its history and DossierStatusChanged, in the
    caller's transaction; a concurrent move first is an InvalidTransition (409)."""
    await claim(session, dossier.code, dossier.state, to)
    return await announce(
        session,
        outbox,
        dossier,
        to,
        agency_code=agency_code,
        now=now,
        reason=reason,
        details=details,
        trace=trace,
    )


async def announce(
    session: AsyncSession,
    outbox: Outbox,
    dossier: DossierFacts,
    to: State,
    *,
    agency_code: str,
    now: datetime,
    reason: str = "",
    details: Json | None = None,
    trace: dict[str, str] | None = None,
) -> DossierFacts:
    """History row and DossierStatusChanged of a checked transition whose row the caller
    has already written."""
    row, event = status_change(dossier, to, agency_code=agency_code, now=now, reason=reason)
    await session.execute(status_changes.insert().values({**row, "details": details}))
    await outbox.put(session, event, trace=trace)
    return DossierFacts(
        dossier.code,
        dossier.procedure_code,
        to,
        dossier.received_at,
        dossier.due_at,
        dossier.finished_at,
    )


def status_change(
    dossier: DossierFacts, to: State, *, agency_code: str, now: datetime, reason: str = ""
) -> tuple[dict[str, object], Event]:
    """The history row and the DossierStatusChanged event of a move to `to`."""
    row: dict[str, object] = {
        "dossier_code": dossier.code,
        "state": to.value,
        "status": NATIONAL[to],
        "previous_status": NATIONAL[dossier.state],
        "agency_code": agency_code,
        "reason": reason,
        "changed_at": now,
    }
    changed = events_pb2.DossierStatusChanged(
        dossier_code=dossier.code,
        procedure_code=dossier.procedure_code,
        status=NATIONAL[to],
        previous_status=NATIONAL[dossier.state],
        agency_code=agency_code,
        reason=reason,
    )
    changed.changed_at.FromDatetime(now)
    changed.received_at.FromDatetime(dossier.received_at)
    changed.due_at.FromDatetime(dossier.due_at)
    if dossier.finished_at is not None:
        changed.finished_at.FromDatetime(dossier.finished_at)
    return row, new_event(changed, source=SOURCE, dossier_code=dossier.code)


def facts_of(
    row: JourneyRow,
    *,
    state: State | None = None,
    due_at: datetime | None = None,
    finished_at: datetime | None = None,
) -> DossierFacts:
    """The facts of a routing_dossier row, with some columns as they are after an update."""
    facts = DossierFacts(
        code=row.code,
        procedure_code=row.procedure_code,
        state=State(row.status),
        received_at=row.received_at,
        due_at=row.due_at,
        finished_at=row.finished_at,
    )
    if state is not None:
        facts = replace(facts, state=state)
    if due_at is not None:
        facts = replace(facts, due_at=due_at)
    if finished_at is not None:
        facts = replace(facts, finished_at=finished_at)
    return facts
