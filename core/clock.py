"""Where services get the time from, so that deadlines can be tested without waiting.

Production uses the system clock; tests inject a TestClock and advance it. Workers that
sleep until an instant do it through the clock too, so advancing a test clock wakes them.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

# Vietnam's time, for what its offices count in: days, office hours, daily caps, dates shown.
VIETNAM = ZoneInfo("Asia/Ho_Chi_Minh")


class Clock(Protocol):
    def now(self) -> datetime:
        """The current instant, timezone-aware."""
        ...

    async def sleep_until(
        self, instant: datetime | None, wakeup: asyncio.Event, longest_s: float
    ) -> None:
        """Return at `instant` (None: no instant known), when `wakeup` is set, or after
        `longest_s` of real time at the latest, whichever comes first."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep_until(
        self, instant: datetime | None, wakeup: asyncio.Event, longest_s: float
    ) -> None:
        timeout = longest_s
        if instant is not None:
            timeout = min(timeout, max(0.0, (instant - self.now()).total_seconds()))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wakeup.wait(), timeout)


class TestClock:
    """A clock that stands still until a test advances it; advancing wakes every sleeper."""

    __test__ = False  # not a pytest test class

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("TestClock needs an aware start instant")
        self._now = start
        self._sleepers: set[asyncio.Event] = set()

    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta) -> None:
        self.set(self._now + delta)

    def set(self, instant: datetime) -> None:
        self._now = instant
        for sleeper in self._sleepers:
            sleeper.set()

    async def sleep_until(
        self, instant: datetime | None, wakeup: asyncio.Event, longest_s: float
    ) -> None:
        if instant is not None and instant <= self._now:
            return
        # Test time only moves through advance(), which sets the sleeper's wakeup.
        self._sleepers.add(wakeup)
        try:
            await wakeup.wait()
        finally:
            self._sleepers.discard(wakeup)


SYSTEM_CLOCK = SystemClock()
