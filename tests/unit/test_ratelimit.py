"""The send pacer on virtual time: bursts are served in full at the rate, a refusal reserves
nothing. Nothing here sleeps for real (the daily cap: tests/unit/test_daily_cap.py)."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Coroutine
from typing import Any

import pytest

from core.ratelimit import RateLimiter


class VirtualTime:
    """A monotonic clock and its sleep, which move only when told to.

    Sleepers park on futures; `run` lets every task go as far as it can, then jumps the
    clock to the earliest wake-up, so concurrent waiters see one consistent timeline.
    """

    def __init__(self) -> None:
        self.now = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        future = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + seconds, next(self._order), future))
        await future

    async def run(self, *coroutines: Coroutine[Any, Any, Any]) -> list[Any]:
        tasks = [asyncio.ensure_future(c) for c in coroutines]
        while not all(t.done() for t in tasks):
            for _ in range(10):  # let every runnable task reach its next sleep
                await asyncio.sleep(0)
            if self._sleepers:
                wake_at, _, future = heapq.heappop(self._sleepers)
                self.now = max(self.now, wake_at)
                future.set_result(None)
        return [t.result() for t in tasks]

    def limiter(self, rate: float, burst: int) -> RateLimiter:
        return RateLimiter(rate, burst, clock=self.monotonic, sleep=self.sleep)


async def test_a_burst_above_the_rate_is_all_served_paced_at_the_rate() -> None:
    vt = VirtualTime()
    limiter = vt.limiter(rate=10, burst=5)
    served: list[tuple[int, float]] = []

    async def send(n: int) -> None:
        await limiter.acquire()
        served.append((n, vt.now))

    await vt.run(*(send(n) for n in range(25)))

    assert [n for n, _ in served] == list(range(25)), "first come, first served"
    times = [t for _, t in served]
    assert times[:5] == [0.0] * 5, "the burst goes at once"
    # Then one every 1/rate: 0.1, 0.2, ... 2.0 for the 25th.
    assert times[5:] == pytest.approx([0.1 * k for k in range(1, 21)])
    # Over any window, no more than burst + rate × window were let through.
    for i, start in enumerate(times):
        in_window = [t for t in times[i:] if t < start + 1.0]
        assert len(in_window) <= 5 + 10


async def test_an_idle_bucket_refills_up_to_the_burst_only() -> None:
    vt = VirtualTime()
    limiter = vt.limiter(rate=2, burst=3)
    await vt.run(*(limiter.acquire() for _ in range(3)))
    assert vt.now == 0.0
    vt.now = 60.0  # a long quiet minute refills three permits, not 120
    stamps: list[float] = []

    async def send() -> None:
        await limiter.acquire()
        stamps.append(vt.now)

    await vt.run(*(send() for _ in range(5)))
    assert stamps == pytest.approx([60.0, 60.0, 60.0, 60.5, 61.0])


async def test_acquire_with_max_wait_gives_up_without_reserving() -> None:
    vt = VirtualTime()
    limiter = vt.limiter(rate=1, burst=1)
    assert await limiter.acquire(max_wait=0) is True
    assert limiter.delay() == pytest.approx(1.0)
    assert await limiter.acquire(max_wait=0.5) is False
    assert vt.now == 0.0, "a refusal does not wait"
    # The refused caller took nothing: the next permit is still one second away.
    assert limiter.delay() == pytest.approx(1.0)
    [granted] = await vt.run(limiter.acquire(max_wait=1.0))
    assert granted is True
    assert vt.now == pytest.approx(1.0)


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (-1, 1), (1, 0)])
def test_refuses_limits_that_would_never_grant(rate: float, burst: int) -> None:
    with pytest.raises(ValueError, match="must be"):
        RateLimiter(rate, burst)


async def test_real_clocks_by_default() -> None:
    limiter = RateLimiter(rate_per_s=1000, burst=2)
    started = asyncio.get_running_loop().time()
    for _ in range(4):
        assert await limiter.acquire() is True
    # Two beyond the burst at 1000/s: about 2 ms of real pacing, far below a second.
    assert asyncio.get_running_loop().time() - started < 0.5
