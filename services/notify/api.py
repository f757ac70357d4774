"""Notify's REST API: the delivery status of every message sent about a dossier."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from core.auth import DEAD_LETTERS_MANAGE, require_scope
from core.openapi import problems
from core.problems import Problem
from services.notify.deps import Deps, Sessions
from services.notify.models import notifications, status_history
from services.notify.status import Status

router = APIRouter(prefix="/v1", tags=["notifications"])


class StatusChangeOut(BaseModel):
    status: Status
    reason: str | None
    attempt: int
    at: datetime


class NotificationOut(BaseModel):
    id: str
    event_id: str
    dossier_code: str
    channel: str
    recipient: str | None
    template: str
    template_version: int
    subject: str
    status: Status
    reason: str | None
    attempts: int
    provider_id: str | None
    created_at: datetime
    updated_at: datetime
    sent_at: datetime | None


class NotificationDetailOut(NotificationOut):
    body: str
    # Every status the notification went through, oldest first.
    history: list[StatusChangeOut]


@router.get("/notifications", response_model=list[NotificationOut])
async def list_notifications(
    sessions: Sessions,
    dossier: Annotated[str, Query(min_length=1, description="The dossier's receipt code")],
) -> list[NotificationOut]:
    """Every notification about one dossier, oldest first."""
    async with sessions() as session:
        rows = await session.execute(
            select(notifications)
            .where(notifications.c.dossier_code == dossier)
            .order_by(notifications.c.created_at, notifications.c.channel)
        )
    return [NotificationOut.model_validate(dict(r._mapping)) for r in rows]


@router.get(
    "/notifications/{notification_id}",
    response_model=NotificationDetailOut,
    responses=problems(404),
)
async def get_notification(notification_id: str, sessions: Sessions) -> NotificationDetailOut:
    """One notification, its text and its status history."""
    async with sessions() as session:
        row = (
            await session.execute(
                select(notifications).where(notifications.c.id == notification_id)
            )
        ).first()
        history = await session.execute(
            select(status_history)
            .where(status_history.c.notification_id == notification_id)
            .order_by(status_history.c.id)
        )
    if row is None:
        raise Problem(404, "notification-not-found", "No such notification", notification_id)
    changes = [StatusChangeOut.model_validate(dict(h._mapping)) for h in history]
    return NotificationDetailOut.model_validate(dict(row._mapping) | {"history": changes})


# A message given up is an operator's dead letter: sent again as a new message (a new id,
# so a provider that de-duplicates by reference takes it), with a retry window of its own,
# while the failed one keeps its status and history.
RESENDABLE = ("permanent-failure", "technical-failure")


@router.post(
    "/notifications/{notification_id}/resend",
    response_model=NotificationOut,
    status_code=201,
    responses=problems(404, 409),
    operation_id="resendNotification",
    summary="Send a failed notification again, as a new message",
    dependencies=[Depends(require_scope(DEAD_LETTERS_MANAGE))],
)
async def resend_notification(notification_id: str, deps: Deps) -> NotificationOut:
    sessions = deps.sessions
    now = deps.clock.now()
    async with sessions.begin() as session:
        row = (
            await session.execute(
                select(notifications).where(notifications.c.id == notification_id)
            )
        ).first()
        if row is None:
            raise Problem(404, "notification-not-found", "No such notification", notification_id)
        if row.status not in RESENDABLE:
            raise Problem(
                409,
                "notification-not-failed",
                "Only a notification given up can be sent again",
                f"notification {notification_id} is {row.status}",
            )
        earlier = notifications.c.event_id.like(f"{row.event_id}/resend-%")
        resends = await session.scalar(
            select(func.count()).select_from(notifications).where(earlier)
        )
        pending = await session.scalar(
            select(func.count())
            .select_from(notifications)
            .where(earlier, notifications.c.status.not_in(RESENDABLE))
        )
        if pending:
            # A double click, or a retry after a timeout, must not tell the citizen twice.
            raise Problem(
                409,
                "notification-already-resent",
                "This notification was sent again already",
                f"a resend of {notification_id} is under way or delivered",
            )
        fresh = dict(row._mapping) | {
            "id": str(uuid.uuid4()),
            # Unique with channel and subscription: each resend is an event of its own.
            "event_id": f"{row.event_id}/resend-{(resends or 0) + 1}",
            "status": "created",
            "attempts": 0,
            "reason": f"resend of {notification_id}",
            "provider_id": None,
            "next_attempt_at": now,
            "created_at": now,
            "updated_at": now,
            "sent_at": None,
            "in_flight_at": None,
        }
        try:
            await session.execute(notifications.insert().values(fresh))
        except IntegrityError:  # a concurrent resend took the same number
            raise Problem(
                409,
                "notification-already-resent",
                "This notification was sent again already",
                f"a resend of {notification_id} is under way",
            ) from None
        await deps.status_log.record(session, [fresh], now)
    deps.outbox.wakeup.set()
    for sender_wakeup in deps.sender_wakeups:
        sender_wakeup.set()
    return NotificationOut.model_validate(fresh)
