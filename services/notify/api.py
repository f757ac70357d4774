"""Notify's REST API: the delivery status of every message sent about a dossier."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.problems import PROBLEM_RESPONSES, Problem
from services.notify.models import notifications, status_history

router = APIRouter(prefix="/v1", tags=["notifications"])


class StatusChangeOut(BaseModel):
    status: str
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
    status: str
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


def sessions(request: Request) -> async_sessionmaker[AsyncSession]:
    value: async_sessionmaker[AsyncSession] = request.app.state.runtime.sessions
    return value


Sessions = Annotated[async_sessionmaker[AsyncSession], Depends(sessions)]


@router.get("/notifications", response_model=list[NotificationOut], responses=PROBLEM_RESPONSES)
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
    responses=PROBLEM_RESPONSES,
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
