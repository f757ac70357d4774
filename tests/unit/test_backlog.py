"""The pace arithmetic behind intake's back-pressure (core/backlog.py), without Kafka."""

from __future__ import annotations

import math

from core.backlog import PipelineBacklog


def backlog(max_s: float = 10, floor: int = 100) -> PipelineBacklog:
    watch = PipelineBacklog(
        "unused:9092",
        "dossier.events",
        ["routing", "notify"],
        max_backlog_s=max_s,
        floor_events=floor,
        interval_s=1,
    )
    watch._measured = True
    return watch


def test_a_backlog_under_the_floor_is_none() -> None:
    watch = backlog()
    watch._update("notify", committed=0, backlog=90, now=0)
    watch._update("notify", committed=0, backlog=95, now=1)
    assert watch.behind_s == 0
    assert not watch.over


def test_a_first_burst_after_a_quiet_time_is_taken_in() -> None:
    watch = backlog()
    watch._update("notify", committed=1000, backlog=0, now=0)
    watch._update("notify", committed=1000, backlog=5000, now=1)
    # Its pace under load is unknown yet: not held against it.
    assert watch.paces["notify"].rate is None
    assert not watch.over


def test_the_pace_is_measured_while_busy_and_the_slowest_group_decides() -> None:
    watch = backlog(max_s=10)
    for group, per_s in (("routing", 1000), ("notify", 100)):
        watch._update(group, committed=0, backlog=3000, now=0)
        watch._update(group, committed=per_s, backlog=3000, now=1)
    assert watch.paces["routing"].rate == 1000
    assert watch.paces["notify"].rate == 100
    assert watch.behind_s == 30
    assert watch.over
    # Back under the limit at that pace in about 20 s.
    assert watch.retry_after_s == 20


def test_a_group_that_stops_draining_is_endlessly_behind() -> None:
    watch = backlog()
    watch._update("notify", committed=0, backlog=500, now=0)
    watch._update("notify", committed=0, backlog=600, now=1)
    assert watch.paces["notify"].rate == 0
    assert math.isinf(watch.behind_s)
    assert watch.over
    assert watch.retry_after_s == 60


def test_zero_means_never_and_unmeasured_means_open() -> None:
    never = backlog(max_s=0)
    never._update("notify", committed=0, backlog=500, now=0)
    never._update("notify", committed=0, backlog=600, now=1)
    assert not never.over
    unmeasured = backlog()
    unmeasured._update("notify", committed=0, backlog=500, now=0)
    unmeasured._update("notify", committed=0, backlog=600, now=1)
    unmeasured._measured = False  # Kafka could not be asked: intake keeps accepting
    assert not unmeasured.over
