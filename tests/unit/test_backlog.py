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


def busy_for(watch: PipelineBacklog, group: str, per_s: int, seconds: int) -> None:
    """The group works through a backlog of 3000 for `seconds`, committing per_s a second."""
    for t in range(seconds + 1):
        watch._update(group, committed=per_s * t, backlog=3000, now=t)


def test_the_pace_is_measured_while_busy_and_the_slowest_group_decides() -> None:
    watch = backlog(max_s=10)
    busy_for(watch, "routing", 1000, 5)
    busy_for(watch, "notify", 100, 5)
    assert watch.paces["routing"].rate == 1000
    assert watch.paces["notify"].rate == 100
    assert watch.behind_s == 30
    assert watch.over
    # Back under the limit at that pace in about 20 s, but told to come back within the
    # ceiling: the gate opens at the limit with 10 s of work still waiting.
    assert watch.retry_after_s == 10
    short_wait = backlog(max_s=25)
    busy_for(short_wait, "notify", 100, 5)
    assert short_wait.retry_after_s == 5


def test_a_batch_between_commits_is_not_judged_a_stop() -> None:
    """A consumer commits once per batch: over one interval, or a few, it may show no
    progress while it works. Its pace is judged over 5 intervals of uninterrupted work."""
    watch = backlog(max_s=10)
    watch._update("notify", committed=0, backlog=3000, now=0)
    for t in (1, 2, 3, 4):
        watch._update("notify", committed=0, backlog=3000, now=t)
        assert watch.paces["notify"].rate is None
        assert not watch.over
    watch._update("notify", committed=3000, backlog=3000, now=5)
    assert watch.paces["notify"].rate == 600
    assert not watch.over


def test_the_pace_is_that_of_the_last_window() -> None:
    watch = backlog()
    busy_for(watch, "notify", 1000, 20)
    # Then slower: after a whole window (15 intervals) at 100/s, only that pace counts.
    for t in range(21, 36):
        watch._update("notify", committed=20_000 + 100 * (t - 20), backlog=3000, now=t)
    assert watch.paces["notify"].rate == 100


def test_a_quiet_spell_keeps_the_last_busy_pace() -> None:
    watch = backlog()
    busy_for(watch, "notify", 200, 5)
    watch._update("notify", committed=1000, backlog=0, now=6)
    watch._update("notify", committed=1000, backlog=0, now=60)
    assert watch.paces["notify"].rate == 200
    # A burst after the quiet spell is judged at the pace the group last showed.
    watch._update("notify", committed=1000, backlog=3000, now=61)
    assert watch.behind_s == 15


def test_a_group_that_stops_draining_is_endlessly_behind() -> None:
    watch = backlog()
    for t in range(6):
        watch._update("notify", committed=0, backlog=500 + t, now=t)
    assert watch.paces["notify"].rate == 0
    assert math.isinf(watch.behind_s)
    assert watch.over
    assert watch.retry_after_s == 10


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
