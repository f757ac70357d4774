"""Delivery status of a notification: the allowed transitions, the retry decision, and
recording a change (row, history line and, for outcomes, a NotificationStatusChanged
event, in one commit).

    created ──▶ sending ──▶ delivered
       │          │ ▲────▶ temporary-failure ──▶ (sending again, with backoff)
       │          ├──────▶ permanent-failure    (refused, invalid, or retried too long)
       └──────────┴──────▶ technical-failure    (our own fault: template, configuration)

`sending → sending` is a lease that ran out (a crash mid-send): the message is tried again.
Terminal statuses are never left.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import bindparam
from sqlalchemy.ext.asyncio import AsyncSession

from core.events import Event, new_event
from core.outbox import Outbox
from core.workqueue import RetryPolicy as WorkQueuePolicy
from gateway.v1 import events_pb2
from services.notify.models import notifications, status_history

Status = Literal[
    "created",
    "sending",
    "delivered",
    "temporary-failure",
    "permanent-failure",
    "technical-failure",
]
TERMINAL: frozenset[str] = frozenset({"delivered", "permanent-failure", "technical-failure"})
TRANSITIONS: dict[str, frozenset[str]] = {
    "created": frozenset({"sending", "permanent-failure", "technical-failure"}),
    "sending": frozenset(
        {"sending", "delivered", "temporary-failure", "permanent-failure", "technical-failure"}
    ),
    "temporary-failure": frozenset({"sending", "permanent-failure", "technical-failure"}),
}


class IllegalTransition(ValueError):
    pass


def check_transition(old: str, new: str) -> None:
    if new not in TRANSITIONS.get(old, frozenset()):
        raise IllegalTransition(f"a notification cannot go from {old} to {new}")


@dataclass(frozen=True)
class Outcome:
    """What a channel says about one attempt."""

    status: Literal["delivered", "temporary-failure", "permanent-failure", "technical-failure"]
    reason: str | None = None
    provider_id: str | None = None
    # The provider said when to come back (Retry-After).
    retry_after_s: float | None = None


@dataclass(frozen=True)
class RetryPolicy:
    """Notify retries for a time (a message is worth little once stale), not a count."""

    retry_for_s: float
    backoff_base_s: float
    backoff_max_s: float

    @property
    def backoff(self) -> WorkQueuePolicy:
        return WorkQueuePolicy(
            base_s=self.backoff_base_s, max_s=self.backoff_max_s, jitter_floor=0.5
        )


def after_attempt(
    outcome: Outcome, *, attempts: int, created_at: datetime, now: datetime, policy: RetryPolicy
) -> dict[str, Any]:
    """The row's new values after one attempt: delivered, retried later, or given up."""
    if outcome.status == "delivered":
        return {"status": "delivered", "reason": None, "sent_at": now}
    if outcome.status != "temporary-failure":
        return {"status": outcome.status, "reason": outcome.reason}
    age = (now - created_at).total_seconds()
    if age >= policy.retry_for_s:
        return {
            "status": "permanent-failure",
            "reason": f"still failing after {age:.0f}s of retries: {outcome.reason}",
        }
    # Full jitter, but never sooner than the provider asked.
    delay = max(policy.backoff.delay_s(attempts), outcome.retry_after_s or 0.0)
    return {
        "status": "temporary-failure",
        "reason": outcome.reason,
        "next_attempt_at": now + timedelta(seconds=delay),
    }


class StatusLog:
    """Writes status changes with their history and events, in the caller's transaction."""

    def __init__(self, outbox: Outbox) -> None:
        self._outbox = outbox

    async def record(
        self, session: AsyncSession, rows: Sequence[dict[str, Any]], now: datetime
    ) -> None:
        """`rows` are notification dicts (id, dossier_code, channel, status, reason,
        attempts, trace) as they are after the change; one history line and one event each."""
        if not rows:
            return
        await session.execute(
            status_history.insert(),
            [
                {
                    "notification_id": r["id"],
                    "status": r["status"],
                    "reason": r.get("reason"),
                    "attempt": r["attempts"],
                    "at": now,
                }
                for r in rows
            ],
        )
        # Outcomes only: `created` and `sending` would add two events per message to the
        # dossier topic that every consumer reads, for what the history already keeps.
        outcomes = [r for r in rows if r["status"] not in _UNPUBLISHED]
        await self._outbox.put_many(session, [(_changed(r), r["trace"]) for r in outcomes])

    async def change(
        self,
        session: AsyncSession,
        changes: Sequence[tuple[dict[str, Any], dict[str, Any]]],
        now: datetime,
    ) -> None:
        """Apply (claimed row, new values) pairs in one executemany round trip."""
        if not changes:
            return
        params = []
        for row, values in changes:
            check_transition(row["status"], values["status"])
            after = row | values
            params.append({"_id": row["id"], "updated_at": now} | {k: after[k] for k in _CHANGED})
        await session.execute(
            notifications.update()
            .where(notifications.c.id == bindparam("_id"))
            .values({k: bindparam(k) for k in (*_CHANGED, "updated_at")}),
            params,
        )
        await self.record(session, [row | values for row, values in changes], now)


_UNPUBLISHED = frozenset({"created", "sending"})

# The columns an attempt's outcome may change; every update sets all of them.
_CHANGED = ("status", "reason", "sent_at", "next_attempt_at", "provider_id", "in_flight_at")


def _changed(row: dict[str, Any]) -> Event:
    data = events_pb2.NotificationStatusChanged(
        notification_id=row["id"],
        dossier_code=row["dossier_code"],
        channel=row["channel"],
        status=row["status"],
        reason=row.get("reason") or "",
    )
    return new_event(data, source="/notify", dossier_code=row["dossier_code"])
