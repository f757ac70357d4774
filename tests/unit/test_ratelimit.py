"""The send pacer on virtual time: bursts are served in full at the rate, the daily cap waits
for midnight in Vietnam. Nothing here sleeps for real."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from core.ratelimit import VIETNAM, RateLimiter


class VirtualTime:
    """A monotonic clock, its sleep and a wall clock that all move only when told to.

    Sleepers park on futures; `run` lets every task go as far as it can, then jumps the
    clock to the earliest wake-up, so concurrent waiters see one consistent timeline.
    """

    def __init__(self, wall_start: datetime) -> None:
        self.now = 0.0
        self._wall_start = wall_start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> datetime:
        return self._wall_start + timedelta(seconds=self.now)

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

    def limiter(self, rate: float, burst: int, daily_cap: int | None = None) -> RateLimiter:
        return RateLimiter(
            rate, burst, daily_cap, clock=self.monotonic, sleep=self.sleep, wall=self.wall
        )


NOON = datetime(2026, 11, 20, 12, 0, tzinfo=VIETNAM)


async def test_a_burst_above_the_rate_is_all_served_paced_at_the_rate() -> None:
    vt = VirtualTime(NOON)
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
    vt = VirtualTime(NOON)
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
    vt = VirtualTime(NOON)
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


async def test_daily_cap_waits_for_midnight_in_vietnam() -> None:
    # 23:59:00 in Hà Nội is 16:59 UTC: a UTC-day cap would wait seven more hours.
    vt = VirtualTime(datetime(2026, 11, 20, 16, 59, tzinfo=UTC))
    limiter = vt.limiter(rate=100, burst=10, daily_cap=3)
    stamps: list[datetime] = []

    async def send() -> None:
        await limiter.acquire()
        stamps.append(vt.wall().astimezone(VIETNAM))

    await vt.run(*(send() for _ in range(3)))
    assert limiter.used_today == 3
    assert limiter.delay() == pytest.approx(60.0)
    assert await limiter.acquire(max_wait=59) is False, "a worker can reschedule instead"

    await vt.run(*(send() for _ in range(4)))

    midnight = datetime(2026, 11, 21, 0, 0, tzinfo=VIETNAM)
    assert stamps[:3] == [datetime(2026, 11, 20, 23, 59, tzinfo=VIETNAM)] * 3
    # Nothing dropped: the next day's cap takes the first three at midnight...
    assert stamps[3:6] == [midnight] * 3
    # ...and the fourth waits for the following midnight.
    assert stamps[6] == midnight + timedelta(days=1)
    assert len(stamps) == 7


async def test_daily_count_starts_afresh_on_a_new_local_day() -> None:
    vt = VirtualTime(datetime(2026, 11, 20, 23, 0, tzinfo=VIETNAM))
    limiter = vt.limiter(rate=1, burst=2, daily_cap=2)
    await vt.run(limiter.acquire(), limiter.acquire())
    assert limiter.delay() == pytest.approx(3600.0)
    vt.now += 3600.0 + 1  # the worker slept elsewhere past midnight
    assert limiter.used_today == 0
    assert limiter.delay() == 0.0
    assert await limiter.acquire(max_wait=0) is True
    assert limiter.used_today == 1


@pytest.mark.parametrize(
    ("rate", "burst", "cap"), [(0, 1, None), (-1, 1, None), (1, 0, None), (1, 1, 0)]
)
def test_refuses_limits_that_would_never_grant(rate: float, burst: int, cap: int | None) -> None:
    with pytest.raises(ValueError, match="must be"):
        RateLimiter(rate, burst, cap)


async def test_real_clocks_by_default() -> None:
    limiter = RateLimiter(rate_per_s=1000, burst=2)
    started = asyncio.get_running_loop().time()
    for _ in range(4):
        assert await limiter.acquire() is True
    # Two beyond the burst at 1000/s: about 2 ms of real pacing, far below a second.
    assert asyncio.get_running_loop().time() - started < 0.5
