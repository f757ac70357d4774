"""The generic sender on an embedded database with fake channels: what a crash mid-send
leaves behind, and what is sent again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.outbox import Outbox
from core.storage import create_engine, create_tables, session_factory
from services.notify.models import metadata, notifications, outbox, status_history
from services.notify.sender import ChannelSender
from services.notify.settings import NotifySettings
from services.notify.status import Outcome, StatusLog


class Crash(BaseException):
    """Stands for SIGKILL: nothing after it runs in this 'process'."""


@dataclass
class FakeChannel:
    name: str
    idempotent: bool
    crash_on: int | None = None
    span_name: str = "fake send"
    lane: str | None = None

    def __post_init__(self) -> None:
        self.sent: list[str] = []

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def prepare(self, rows: Sequence[dict[str, Any]]) -> None:
        pass

    async def send(self, row: dict[str, Any]) -> Outcome:
        self.sent.append(row["id"])  # the provider has it...
        if len(self.sent) == self.crash_on:
            raise Crash  # ...and notify dies before hearing so
        return Outcome("delivered")


@pytest.fixture
async def sessions(tmp_path: Path) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'notify.db'}")
    await create_tables(engine, metadata)
    yield session_factory(engine)
    await engine.dispose()


async def seed(sessions: async_sessionmaker[AsyncSession], channel: str, count: int) -> None:
    now = datetime.now(UTC)
    rows = [
        {
            "id": f"n{i}",
            "event_id": f"e{i}",
            "dossier_code": "X-1",
            "channel": channel,
            "subscription_id": "",
            "recipient": "lan@example.vn",
            "template": "received",
            "template_version": 1,
            "subject": "s",
            "body": "b",
            "status": "created",
            "attempts": 0,
            "next_attempt_at": now,
            "trace": {},
            "created_at": now,
            "updated_at": now,
        }
        for i in range(count)
    ]
    async with sessions.begin() as session:
        await session.execute(notifications.insert(), rows)


def sender(channel: FakeChannel, sessions: async_sessionmaker[AsyncSession]) -> ChannelSender:
    settings = NotifySettings(send_lease_s=30, email_rate_per_s=1000, sms_rate_per_s=1000)
    engine = sessions.kw["bind"]
    status_log = StatusLog(Outbox(outbox, "dossier.events"))
    return ChannelSender(channel, settings, engine, sessions, asyncio.Event(), status_log)


async def crash_then_restart(
    channel: str, idempotent: bool, sessions: async_sessionmaker[AsyncSession]
) -> tuple[FakeChannel, FakeChannel, dict[str, Any]]:
    await seed(sessions, channel, 4)
    first = FakeChannel(channel, idempotent, crash_on=2)
    dying = sender(first, sessions)
    with pytest.raises(Crash):
        await dying._send_all(await dying._claim())
    # The lease runs out.
    async with sessions.begin() as session:
        await session.execute(
            update(notifications).values(next_attempt_at=datetime.now(UTC) - timedelta(1))
        )
    second = FakeChannel(channel, idempotent)
    restarted = sender(second, sessions)
    await restarted._send_all(await restarted._claim())
    async with sessions() as session:
        rows = {r.id: r for r in await session.execute(select(notifications))}
    return first, second, rows


async def test_email_in_flight_at_a_crash_is_not_sent_again(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    first, second, rows = await crash_then_restart("email", False, sessions)
    assert first.sent == ["n0", "n1"]
    # n0's outcome was committed with n1's in-flight mark; n1 may have arrived: not resent.
    assert second.sent == ["n2", "n3"]
    assert {i: r.status for i, r in rows.items()} == {
        "n0": "delivered",
        "n1": "technical-failure",
        "n2": "delivered",
        "n3": "delivered",
    }
    assert "interrupted" in rows["n1"].reason
    async with sessions() as session:
        history = (
            await session.execute(
                select(status_history.c.status)
                .where(status_history.c.notification_id == "n1")
                .order_by(status_history.c.id)
            )
        ).scalars()
        assert list(history) == ["sending", "technical-failure"]


async def test_an_idempotent_channel_sends_everything_again_with_the_same_ids(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    first, second, rows = await crash_then_restart("sms", True, sessions)
    assert set(first.sent) <= {"n0", "n1", "n2", "n3"}
    # No outcome of the crashed batch was committed: all go again, the provider de-duplicates.
    assert sorted(second.sent) == ["n0", "n1", "n2", "n3"]
    assert {r.status for r in rows.values()} == {"delivered"}
    assert {r.attempts for r in rows.values()} == {2}


async def test_emails_marked_in_flight_together_are_given_up_together_at_a_crash(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await seed(sessions, "email", 5)
    settings = NotifySettings(send_lease_s=30, email_rate_per_s=1000, email_in_flight_max=2)
    status_log = StatusLog(Outbox(outbox, "dossier.events"))
    engine = sessions.kw["bind"]

    def grouped(channel: FakeChannel) -> ChannelSender:
        return ChannelSender(channel, settings, engine, sessions, asyncio.Event(), status_log)

    first = FakeChannel("email", idempotent=False, crash_on=4)
    dying = grouped(first)
    with pytest.raises(Crash):
        await dying._send_all(await dying._claim())
    async with sessions.begin() as session:
        await session.execute(
            update(notifications).values(next_attempt_at=datetime.now(UTC) - timedelta(1))
        )
    second = FakeChannel("email", idempotent=False)
    restarted = grouped(second)
    await restarted._send_all(await restarted._claim())
    async with sessions() as session:
        rows = {r.id: r for r in await session.execute(select(notifications))}

    # n0 and n1 went in one group, their outcomes committed with the next group's mark;
    # the crash came inside the group n2, n3: both may have arrived, neither is resent.
    assert first.sent == ["n0", "n1", "n2", "n3"]
    assert second.sent == ["n4"]
    assert {i: r.status for i, r in rows.items()} == {
        "n0": "delivered",
        "n1": "delivered",
        "n2": "technical-failure",
        "n3": "technical-failure",
        "n4": "delivered",
    }


async def test_an_email_whose_lease_ran_out_and_was_claimed_again_is_sent_once(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """A slow replica: its batch outlives its lease, another replica claims the rows it had
    not reached yet and sends them. The slow one must not send them too (at most once)."""
    await seed(sessions, "email", 3)
    slow_channel, other_channel = FakeChannel("email", False), FakeChannel("email", False)
    slow, other = sender(slow_channel, sessions), sender(other_channel, sessions)
    late = await slow._claim()
    assert len(late) == 3
    # The lease runs out before the slow replica gets to them; the other claims and sends.
    async with sessions.begin() as session:
        await session.execute(
            update(notifications).values(next_attempt_at=datetime.now(UTC) - timedelta(1))
        )
    await other._send_all(await other._claim())
    assert sorted(other_channel.sent) == ["n0", "n1", "n2"]

    await slow._send_all(late)  # the slow replica reaches its batch at last

    assert slow_channel.sent == []
    async with sessions() as session:
        rows = list(await session.execute(select(notifications)))
    assert {r.status for r in rows} == {"delivered"}
    assert {r.attempts for r in rows} == {2}  # the slow one gave nothing back either
