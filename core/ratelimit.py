"""Pacing of sends to a provider: a token bucket (rate + burst) and a daily cap.

Providers (SMS gateways, mail relays) throttle or bill by rate and by day. Going over is
answered with 429s or silence, so the sender paces itself instead: a caller that is over
the limit waits for its turn, and no message is ever dropped here.

The bucket is GCRA (virtual scheduling), which is an exact token bucket kept as a single
"theoretical arrival time". Each acquire reserves its slot synchronously, before sleeping,
so concurrent callers are served first come first served and can never overshoot the rate
together, without a lock.

The daily cap counts permits per calendar day in Asia/Ho_Chi_Minh, the day the provider's
contract and the citizens live in; the count resets at local midnight.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from datetime import time as clock_time

from core.clock import SYSTEM_CLOCK, VIETNAM


def _utc_now() -> datetime:
    return SYSTEM_CLOCK.now()


@dataclass(frozen=True)
class _Slot:
    at: float  # monotonic time at which the permit may be used
    day: date  # the local day it counts against
    used: int  # permits used on that day, this one included
    day_start: float  # monotonic time before which no permit may count against `day`


class RateLimiter:
    """`await limiter.acquire()` before each send.

    Waiting versus giving up: `acquire()` without `max_wait` waits as long as it takes,
    even until midnight when the daily cap is spent; that suits a caller with nothing else
    to do. A worker that holds leased rows must not: sleeping for hours past its lease
    lets another worker claim and send the same rows. It calls `acquire(max_wait)` with a
    bound well inside its lease, and on False gives the rows back with
    next_attempt_at = now + `delay()`. A refused acquire reserves nothing, so giving up
    costs the others no capacity.

    A permit whose waiter is cancelled is not handed back: the limiter errs on sending
    less, never more. Clocks are injected so tests run on virtual time: `clock` is
    monotonic seconds and `sleep` its matching sleep; `wall` is only read to tell which
    local day it is and when midnight comes.
    """

    def __init__(
        self,
        rate_per_s: float,
        burst: int = 1,
        daily_cap: int | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        wall: Callable[[], datetime] = _utc_now,
    ) -> None:
        if rate_per_s <= 0:
            raise ValueError("rate_per_s must be positive")
        if burst < 1:
            raise ValueError("burst must be at least 1")
        if daily_cap is not None and daily_cap < 1:
            raise ValueError("daily_cap must be at least 1 (or None for no cap)")
        self._interval = 1.0 / rate_per_s
        # How far ahead of the steady rate a burst may run.
        self._tolerance = (burst - 1) * self._interval
        self._daily_cap = daily_cap
        self._clock = clock
        self._sleep = sleep
        self._wall = wall
        self._tat = clock()  # theoretical arrival time of the next permit at the steady rate
        self._day = date.min
        self._used = 0
        self._day_start = float("-inf")

    async def acquire(self, max_wait: float | None = None) -> bool:
        """Wait for a permit; True once it is granted.

        With `max_wait`, returns False at once (without waiting and without reserving)
        when the permit would come later than `max_wait` seconds from now. The decision is
        taken up front, unlike asyncio.timeout(), which would cancel a wait half-way and
        waste the permit it had reserved.
        """
        now = self._clock()
        slot = self._next_slot(now)
        wait = slot.at - now
        if max_wait is not None and wait > max_wait:
            return False
        self._tat = max(self._tat, slot.at) + self._interval
        self._day, self._used, self._day_start = slot.day, slot.used, slot.day_start
        if wait > 0:
            await self._sleep(wait)
        return True

    def delay(self) -> float:
        """Seconds until a permit asked for now would be granted (0 when it would be at once)."""
        now = self._clock()
        return max(0.0, self._next_slot(now).at - now)

    @property
    def used_today(self) -> int:
        """Permits granted against the current local day (for metrics; 0 once the cap is
        spent and waiters already hold permits for tomorrow)."""
        today = self._wall().astimezone(VIETNAM).date()
        return self._used if self._day == today else 0

    def _next_slot(self, now: float) -> _Slot:
        # The floor: after a capped day, a burst must not slip back before midnight.
        at = max(now, self._tat - self._tolerance, self._day_start)
        day, used, day_start = self._day, self._used, self._day_start
        if self._daily_cap is not None:
            wall = self._wall()
            at_day = (wall + timedelta(seconds=at - now)).astimezone(VIETNAM).date()
            # Only forward: a wall clock stepped back must not hand out a day's cap again.
            if at_day > day:
                day, used = at_day, 0
            if used >= self._daily_cap:
                day += timedelta(days=1)
                midnight = datetime.combine(day, clock_time(), tzinfo=VIETNAM)
                day_start = now + (midnight - wall).total_seconds()
                at = max(at, day_start)
                used = 0
        return _Slot(at=at, day=day, used=used + 1, day_start=day_start)
