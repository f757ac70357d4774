import asyncio
from datetime import UTC, datetime, timedelta

from core.clock import SystemClock, TestClock


async def test_test_clock_wakes_its_sleepers_when_advanced() -> None:
    clock = TestClock(datetime(2027, 2, 3, 2, 30, tzinfo=UTC))
    wakeup = asyncio.Event()
    sleeper = asyncio.create_task(clock.sleep_until(clock.now() + timedelta(hours=1), wakeup, 30))
    await asyncio.sleep(0)
    assert not sleeper.done()
    clock.advance(timedelta(minutes=5))
    await asyncio.wait_for(sleeper, 1)
    assert clock.now() == datetime(2027, 2, 3, 2, 35, tzinfo=UTC)
    # An instant already passed returns at once.
    await asyncio.wait_for(clock.sleep_until(clock.now(), asyncio.Event(), 30), 1)


async def test_system_clock_sleeps_until_the_instant_or_a_wakeup() -> None:
    clock = SystemClock()
    loop = asyncio.get_running_loop()
    started = loop.time()
    await clock.sleep_until(clock.now() + timedelta(milliseconds=50), asyncio.Event(), 30)
    assert 0.04 <= loop.time() - started < 5
    wakeup = asyncio.Event()
    loop.call_later(0.05, wakeup.set)
    await asyncio.wait_for(clock.sleep_until(None, wakeup, 30), 5)
