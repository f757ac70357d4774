"""Admission control: places, a queue budget, and fair shares between callers."""

from __future__ import annotations

import asyncio

from core.admission import Admission

DESK = ("10.0.0.1", b"Bearer desk")
STORM = ("10.0.0.2", b"Basic c3Rvcm0=")


async def test_a_lone_caller_queues_for_the_budget_then_gets_503() -> None:
    gate = Admission(max_in_flight=2, queue_budget_s=0.05)
    assert [await gate.enter(DESK), await gate.enter(DESK)] == [200, 200]
    assert await gate.enter(DESK) == 503
    assert gate.saturated
    gate.leave(DESK)
    assert await gate.enter(DESK) == 200


async def test_a_caller_over_its_share_of_a_full_service_gets_429_at_once() -> None:
    gate = Admission(max_in_flight=4, queue_budget_s=5)
    assert [await gate.enter(STORM) for _ in range(3)] == [200, 200, 200]
    assert await gate.enter(DESK) == 200  # full now: 3 + 1
    # The storm holds 3 of 4 places, more than half with two callers present: refused
    # without waiting (the budget is 5 s).
    answer = await asyncio.wait_for(gate.enter(STORM), 1)
    assert answer == 429
    # The desk, under its share, waits for the next free place and gets it.
    waiting = asyncio.create_task(gate.enter(DESK))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    gate.leave(STORM)
    assert await waiting == 200


async def test_invented_credentials_from_one_address_count_as_one_caller() -> None:
    gate = Admission(max_in_flight=Admission.CALLERS_PER_ADDRESS + 4, queue_budget_s=5)
    fakes = [("10.0.0.9", f"Basic fake-{n}".encode()) for n in range(40)]
    keys = {gate.caller(*fake) for fake in fakes[: Admission.CALLERS_PER_ADDRESS]}
    for key in keys:
        assert await gate.enter(key) == 200
    pooled = gate.caller(*fakes[-1])
    assert pooled == ("10.0.0.9", b"")
    # Another address's caller is still a caller of its own.
    assert gate.caller(*DESK) == DESK


async def test_places_and_shares_are_given_back() -> None:
    gate = Admission(max_in_flight=2, queue_budget_s=0.05)
    for _ in range(3):
        assert await gate.enter(STORM) == 200
        assert await gate.enter(DESK) == 200
        gate.leave(STORM)
        gate.leave(DESK)
    assert gate.in_flight == 0
    assert gate._held == {}
    assert gate._callers == {}
