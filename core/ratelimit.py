"""Pacing of sends to a provider: a token bucket (rate + burst), per process.

Providers (SMS gateways, mail relays) throttle by rate. Going over is answered with 429s or
silence, so the sender paces itself instead: a caller that is over the limit waits for its
turn, and no message is ever dropped here.

The bucket is GCRA (virtual scheduling), which is an exact token bucket kept as a single
"theoretical arrival time". Each acquire reserves its slot synchronously, before sleeping,
so concurrent callers are served first come first served and can never overshoot the rate
together, without a lock.

It is this process's pace: replicas divide a provider's rate between them (notify's
SEND_REPLICAS). A provider's daily cap is not counted here but in the service's database,
one count for every replica (services/notify/daily_cap.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


class RateLimiter:
    """`await limiter.acquire()` before each send.

    Waiting versus giving up: `acquire()` without `max_wait` waits as long as it takes; that
    suits a caller with nothing else to do. A worker that holds leased rows must not:
    sleeping past its lease lets another worker claim and send the same rows. It calls
    `acquire(max_wait)` with a bound well inside its lease, and on False gives the rows back
    with next_attempt_at = now + `delay()`. A refused acquire reserves nothing, so giving up
    costs the others no capacity.

    A permit whose waiter is cancelled is not handed back: the limiter errs on sending
    less, never more. Clocks are injected so tests run on virtual time: `clock` is
    monotonic seconds and `sleep` its matching sleep.
    """

    def __init__(
        self,
        rate_per_s: float,
        burst: int = 1,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if rate_per_s <= 0:
            raise ValueError("rate_per_s must be positive")
        if burst < 1:
            raise ValueError("burst must be at least 1")
        self._interval = 1.0 / rate_per_s
        # How far ahead of the steady rate a burst may run.
        self._tolerance = (burst - 1) * self._interval
        self._clock = clock
        self._sleep = sleep
        self._tat = clock()  # theoretical arrival time of the next permit at the steady rate

    async def acquire(self, max_wait: float | None = None) -> bool:
        """Wait for a permit; True once it is granted.

        With `max_wait`, returns False at once (without waiting and without reserving)
        when the permit would come later than `max_wait` seconds from now. The decision is
        taken up front, unlike asyncio.timeout(), which would cancel a wait half-way and
        waste the permit it had reserved.
        """
        now = self._clock()
        at = self._next_slot(now)
        wait = at - now
        if max_wait is not None and wait > max_wait:
            return False
        self._tat = max(self._tat, at) + self._interval
        if wait > 0:
            await self._sleep(wait)
        return True

    def delay(self) -> float:
        """Seconds until a permit asked for now would be granted (0 when it would be at once)."""
        now = self._clock()
        return max(0.0, self._next_slot(now) - now)

    def _next_slot(self, now: float) -> float:
        return max(now, self._tat - self._tolerance)
