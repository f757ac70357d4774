"""Notify's webhook sender in lanes, one per subscription (core/lanes.py), with the real
WebhookChannel on an embedded database: subscriptions sending at once each sign with their
own secret (one lane loading its secrets never makes another's callbacks look deleted), and
a receiver that holds its calls open delays no other subscription."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from core.outbox import Outbox
from core.storage import create_engine, create_tables, session_factory
from services.notify.channels import WebhookChannel
from services.notify.models import metadata, notifications, outbox, webhook_subscriptions
from services.notify.sender import ChannelSender
from services.notify.settings import NotifySettings
from services.notify.status import StatusLog

NOW = datetime.now(UTC)


class Answer:
    status = 204
    phrase = "No Content"


class Receivers:
    """Stands for core.outbound: answers every POST after a moment, those to `tarpit` only
    once released."""

    def __init__(self) -> None:
        self.posted: list[tuple[str, str]] = []
        self.tarpit = ""
        self.release = asyncio.Event()

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> Answer:
        await asyncio.sleep(0.01)
        if url == self.tarpit:
            await self.release.wait()
        self.posted.append((url, headers["webhook-signature"]))
        return Answer()


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'notify.db'}")
    await create_tables(engine, metadata)
    yield engine
    await engine.dispose()


async def seed(engine: AsyncEngine, subscriptions: int, each: int) -> None:
    async with session_factory(engine).begin() as session:
        for k in range(subscriptions):
            await session.execute(
                webhook_subscriptions.insert().values(
                    id=f"sub{k}",
                    agency_code="000.00.01.H22",
                    url=f"https://receiver.test/{k}",
                    event_types=[],
                    secret="whsec_" + f"{k:02d}" * 16,
                    created_at=NOW,
                )
            )
        rows = [
            {
                "id": f"n{k}-{i}",
                "event_id": f"e{k}-{i}",
                "dossier_code": "X",
                "channel": "webhook",
                "subscription_id": f"sub{k}",
                "recipient": f"https://receiver.test/{k}",
                "template": "t",
                "template_version": 1,
                "subject": "s",
                "body": "{}",
                "status": "created",
                "attempts": 0,
                "next_attempt_at": NOW,
                "trace": {},
                "created_at": NOW,
                "updated_at": NOW,
            }
            for k in range(subscriptions)
            for i in range(each)
        ]
        await session.execute(notifications.insert(), rows)


async def statuses(engine: AsyncEngine) -> dict[str, tuple[str, str | None]]:
    async with engine.connect() as conn:
        found = await conn.execute(
            select(notifications.c.id, notifications.c.status, notifications.c.reason)
        )
        return {i: (status, reason) for i, status, reason in found}


@contextlib.asynccontextmanager
async def sending(
    engine: AsyncEngine, receivers: Receivers, **overrides: Any
) -> AsyncIterator[None]:
    sessions = session_factory(engine)
    settings = NotifySettings(webhook_subscription_in_flight_max=2, **overrides)
    channel = WebhookChannel(settings, sessions, outbound=receivers)  # type: ignore[arg-type]  # a stand-in for OutboundClient
    status_log = StatusLog(Outbox(outbox, "dossier.events"))
    sender = ChannelSender(channel, settings, engine, sessions, asyncio.Event(), status_log)
    task = asyncio.create_task(sender.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def delivered(engine: AsyncEngine, ids: set[str]) -> None:
    async with asyncio.timeout(10):
        while not ids <= {i for i, (s, _) in (await statuses(engine)).items() if s == "delivered"}:  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def test_subscriptions_sending_at_once_each_sign_with_their_own_secret(
    engine: AsyncEngine,
) -> None:
    await seed(engine, subscriptions=5, each=4)
    receivers = Receivers()
    # Paced: a lane's later callbacks wait for their permits while other lanes load theirs.
    async with sending(engine, receivers, webhook_rate_per_s=100, webhook_burst=2):
        await delivered(engine, {f"n{k}-{i}" for k in range(5) for i in range(4)})
    assert Counter(s for s, _ in (await statuses(engine)).values()) == {"delivered": 20}
    assert len(receivers.posted) == 20  # each once
    assert len({signature for _, signature in receivers.posted}) == 20


async def test_a_receiver_holding_its_calls_open_delays_no_other_subscription(
    engine: AsyncEngine,
) -> None:
    await seed(engine, subscriptions=3, each=3)
    receivers = Receivers()
    receivers.tarpit = "https://receiver.test/0"
    async with sending(engine, receivers):
        await delivered(engine, {f"n{k}-{i}" for k in (1, 2) for i in range(3)})
        now = await statuses(engine)
        # Two places for the tarpit's lane: the third callback waits, not even claimed.
        assert sorted(now[f"n0-{i}"][0] for i in range(3)) == ["created", "sending", "sending"]
        receivers.release.set()
        await delivered(engine, {f"n0-{i}" for i in range(3)})
    tarpit_calls = [url for url, _ in receivers.posted if url == receivers.tarpit]
    assert len(tarpit_calls) == 3  # each once: two places, the third sent when one came back
