"""Agency systems subscribe to signed callbacks (Standard Webhooks) about their dossiers.

The signing secret is generated here and shown once, in the answer to the creation; the
agency keeps it to verify `webhook-signature`. Subscriptions are notify's own data, changed
at run time through this API, not catalogue entries.

A callback URL is someone else's input: it is checked here (422 naming why) and again at
every send by core.outbound (DNS may change in between). An agency holds a bounded number of
subscriptions (WEBHOOK_MAX_SUBSCRIPTIONS): each is a stream of requests the gateway makes.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Response
from pydantic import AnyHttpUrl, BaseModel, Field, field_validator
from sqlalchemy import delete, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.audit import forbidden, record_refusal
from core.auth import WEBHOOKS_MANAGE, AgencyPrincipal, require_scope
from core.openapi import problems
from core.outbound import DestinationRefused
from core.problems import Problem
from core.signing import new_secret
from core.storage import rowcount
from services.notify.deps import Deps, Outbound, Sessions
from services.notify.models import webhook_subscriptions as subscriptions
from services.notify.notifications import NotificationService

router = APIRouter(prefix="/v1/webhook-subscriptions", tags=["webhooks"])


class SubscriptionIn(BaseModel):
    agency_code: str = Field(min_length=1, max_length=40)
    url: AnyHttpUrl
    event_types: Annotated[list[str], Field(min_length=1)]

    @field_validator("event_types")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - NotificationService.event_types)
        if unknown:
            allowed = ", ".join(sorted(NotificationService.event_types))
            raise ValueError(f"unknown event types {unknown}; one of: {allowed}")
        return sorted(set(value))


class SubscriptionOut(BaseModel):
    id: str
    agency_code: str
    url: str
    event_types: list[str]
    created_at: datetime


class CreatedSubscriptionOut(SubscriptionOut):
    # Shown once: store it to verify webhook-signature.
    secret: str


Agency = Annotated[AgencyPrincipal, Depends(require_scope(WEBHOOKS_MANAGE))]


@router.post(
    "",
    status_code=201,
    response_model=CreatedSubscriptionOut,
    responses=problems(409),
    operation_id="createWebhookSubscription",
)
async def create_subscription(
    body: SubscriptionIn, agency: Agency, sessions: Sessions, client: Outbound, deps: Deps
) -> CreatedSubscriptionOut:
    """Subscribe an agency system; the answer carries the signing secret, this once. An
    agency subscribes for itself only, to a public https URL (or one the operator's
    OUTBOUND_ALLOW names), up to WEBHOOK_MAX_SUBSCRIPTIONS subscriptions."""
    if body.agency_code != agency.agency_code:
        raise forbidden(
            agency,
            action="subscribe-webhooks",
            target=f"agency/{body.agency_code}",
            slug="subscription-for-another-agency",
            title="An agency system may only subscribe for its own agency",
            detail=f"the token is {agency.agency_code}'s, the subscription {body.agency_code}'s",
        )
    try:
        await client.check(str(body.url))
    except DestinationRefused as exc:
        raise Problem(
            422, "callback-url-refused", "The gateway does not call this URL", exc.reason
        ) from exc
    limit = deps.settings.webhook_max_subscriptions
    row = {
        "id": str(uuid.uuid4()),
        "agency_code": body.agency_code,
        "url": str(body.url),
        "event_types": body.event_types,
        "secret": new_secret(),
        "created_at": deps.clock.now(),
    }
    async with sessions.begin() as session:
        if await _held_by(session, body.agency_code) >= limit:
            raise Problem(
                409,
                "subscription-limit-reached",
                "The agency holds as many subscriptions as it may",
                f"at most {limit} subscriptions per agency; delete one first",
                limit=limit,
            )
        await session.execute(subscriptions.insert().values(row))
    return CreatedSubscriptionOut.model_validate(row)


async def _held_by(session: AsyncSession, agency_code: str) -> int:
    """How many subscriptions the agency holds; on PostgreSQL its creations take turns
    until the transaction ends, so two at once cannot both take the last place."""
    if session.get_bind().dialect.name == "postgresql":
        key = f"notify.webhook-subscriptions:{agency_code}"
        await session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": key})
    count = await session.scalar(
        select(func.count()).where(subscriptions.c.agency_code == agency_code)
    )
    return int(count or 0)


@router.get("", response_model=list[SubscriptionOut], operation_id="listWebhookSubscriptions")
async def list_subscriptions(agency: Agency, sessions: Sessions) -> list[SubscriptionOut]:
    """The calling agency's subscriptions."""
    query = (
        select(subscriptions)
        .where(subscriptions.c.agency_code == agency.agency_code)
        .order_by(subscriptions.c.created_at)
    )
    async with sessions() as session:
        rows = await session.execute(query)
    return [SubscriptionOut.model_validate(dict(r._mapping)) for r in rows]


@router.delete(
    "/{subscription_id}",
    status_code=204,
    response_class=Response,
    responses=problems(404),
    operation_id="deleteWebhookSubscription",
)
async def delete_subscription(subscription_id: str, agency: Agency, sessions: Sessions) -> Response:
    """Stop callbacks; those not yet sent fail permanently with the reason. Another agency's
    subscription is not found, as if it did not exist."""
    async with sessions.begin() as session:
        result = await session.execute(
            delete(subscriptions).where(
                subscriptions.c.id == subscription_id,
                subscriptions.c.agency_code == agency.agency_code,
            )
        )
    if not rowcount(result):
        await _audit_if_foreign(sessions, subscription_id, agency)
        raise Problem(404, "subscription-not-found", "No such subscription", subscription_id)
    return Response(status_code=204)


async def _audit_if_foreign(
    sessions: async_sessionmaker[AsyncSession], subscription_id: str, agency: AgencyPrincipal
) -> None:
    """Another agency's subscription answers 404 like a missing one, so its existence is not
    disclosed; the attempt is still a refusal for the audit trail."""
    async with sessions() as session:
        owner = await session.scalar(
            select(subscriptions.c.agency_code).where(subscriptions.c.id == subscription_id)
        )
    if owner is not None:
        record_refusal(
            agency,
            action="delete-webhook-subscription",
            target=f"subscription/{subscription_id}",
            reason=f"subscription-of-another-agency: held by {owner}",
        )
