"""Two notify replicas sending from one PostgreSQL database: they claim disjoint rows (no
message goes out twice) and together stay within the provider's daily cap."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from core.migrations import upgrade
from core.outbox import Outbox
from core.storage import create_engine, session_factory
from devstack.postgres import ensure_postgres
from services.notify.deps import MIGRATIONS
from services.notify.models import daily_sends, metadata, notifications, outbox
from services.notify.sender import ChannelSender
from services.notify.settings import NotifySettings
from services.notify.status import StatusLog
from tests.unit.test_notify_sender import FakeChannel, seed

CAP = 7


@pytest.fixture
async def engines(database_url: str) -> AsyncIterator[tuple[AsyncEngine, AsyncEngine]]:
    url = ensure_postgres("notify_replicas")  # a database of its own (the session's server)
    first, second = create_engine(url), create_engine(url)
    await upgrade(first, "notify", MIGRATIONS, metadata)
    async with first.begin() as conn:
        for table in (notifications, daily_sends):
            await conn.execute(delete(table))
    yield first, second
    await first.dispose()
    await second.dispose()


def replica(engine: AsyncEngine, channel: FakeChannel) -> ChannelSender:
    settings = NotifySettings(
        send_lease_s=30, send_batch_size=5, sms_rate_per_s=1000, sms_daily_cap=CAP
    )
    status_log = StatusLog(Outbox(outbox, "dossier.events"))
    sessions = session_factory(engine)
    return ChannelSender(channel, settings, engine, sessions, asyncio.Event(), status_log)


async def test_two_senders_share_the_rows_and_the_daily_cap(
    engines: tuple[AsyncEngine, AsyncEngine],
) -> None:
    await seed(session_factory(engines[0]), "sms", 20)
    channels = FakeChannel("sms", idempotent=True), FakeChannel("sms", idempotent=True)
    senders = [replica(engine, channel) for engine, channel in zip(engines, channels, strict=True)]

    async def round_of(sender: ChannelSender) -> None:
        await sender._send_all(await sender._claim())

    # Several rounds of both at once: every row is claimed, none twice, and no more than
    # the day's cap in all (not CAP per replica).
    for _ in range(3):
        await asyncio.gather(*(round_of(sender) for sender in senders))
    sent = channels[0].sent + channels[1].sent
    assert len(sent) == len(set(sent)) == CAP, (channels[0].sent, channels[1].sent)
    assert all(channel.sent for channel in channels)  # both took part
    async with session_factory(engines[0])() as session:
        delivered = await session.scalar(
            select(func.count()).where(notifications.c.status == "delivered")
        )
        used = await session.scalar(select(daily_sends.c.used))
    assert (delivered, used) == (CAP, CAP)
