"""Notify's REST API: the delivery status of every message sent about a dossier."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.problems import PROBLEM_RESPONSES, Problem
from services.notify.models import notifications

router = APIRouter(prefix="/v1", tags=["notifications"])


class NotificationOut(BaseModel):
    id: str
    dossier_code: str
    channel: str
    template: str
    subject: str
    status: str
    reason: str | None
    attempts: int
    created_at: datetime
    sent_at: datetime | None


def sessions(request: Request) -> async_sessionmaker[AsyncSession]:
    value: async_sessionmaker[AsyncSession] = request.app.state.runtime.sessions
    return value


Sessions = Annotated[async_sessionmaker[AsyncSession], Depends(sessions)]


@router.get("/notifications", response_model=list[NotificationOut], responses=PROBLEM_RESPONSES)
async def list_notifications(
    sessions: Sessions, dossier_code: Annotated[str, Query(min_length=1)]
) -> list[NotificationOut]:
    """Every notification about one dossier, oldest first."""
    async with sessions() as session:
        rows = await session.execute(
            select(notifications)
            .where(notifications.c.dossier_code == dossier_code)
            .order_by(notifications.c.created_at)
        )
    return [NotificationOut.model_validate(dict(r._mapping)) for r in rows]


@router.get(
    "/notifications/{notification_id}", response_model=NotificationOut, responses=PROBLEM_RESPONSES
)
async def get_notification(notification_id: str, sessions: Sessions) -> NotificationOut:
    async with sessions() as session:
        row = (
            await session.execute(
                select(notifications).where(notifications.c.id == notification_id)
            )
        ).first()
    if row is None:
        raise Problem(404, "notification-not-found", "No such notification", notification_id)
    return NotificationOut.model_validate(dict(row._mapping))
