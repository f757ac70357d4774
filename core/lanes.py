"""Lanes: one slow counterpart never holds up the work of the others.

A queue whose rows go out to many counterparts (transfers to agencies, webhooks to their
subscribers) used to work a claimed batch together and claim the next only when the
batch's slowest call had returned. One agency answering at its timeout (10 s) then slowed
every agency's deliveries to one batch per 10 s, and a webhook receiver that never answers
did the same to every subscriber.

A queue with lanes (a column of its table, say `agency_code`) instead:
- splits each claimed batch by lane, and works and records each lane's rows on their own;
- waits for its batch only `patience_s`, then claims again, so the lanes that answer
  promptly go on while a slow lane's calls are still out (a prompt batch is still waited
  for whole, so rows arriving meanwhile are claimed together and recorded in one commit);
- keeps at most `per_lane` rows of one lane in flight: a claim passes over a full lane,
  whose rows stay due for later, and the consumer feeding the queue does not count them
  as room taken (core/room.py), so one agency's backlog waits in the database without
  closing intake to the others; `total` bounds the rows in flight altogether (memory), so
  only `total` / `per_lane` lanes hanging at once would fill the queue: set it well above;
- never claims again a row whose call is still out in this process (a call that outlived
  its lease): one call at a time per row here; another replica may still take it over;
- records the outcomes of lanes that return together in one transaction (`GroupCommit`).

The counts are this process's: each replica gives a lane `per_lane` places.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from sqlalchemy import ColumnElement, Table


@dataclass
class Lanes:
    # The column of the queue's table that names a row's lane.
    column: str
    # The lane of a claimed item as the queue's work receives it.
    of: Callable[[Any], str]
    per_lane: int
    total: int
    patience_s: float = 0.25
    in_flight: Counter[str] = field(default_factory=Counter)

    def room(self) -> int:
        """How many more rows may be in flight."""
        return max(self.total - sum(self.in_flight.values()), 0)

    def passing_over_full(self, table: Table) -> ColumnElement[bool] | None:
        """The condition that leaves out the rows of lanes with no place left."""
        full = sorted(lane for lane, n in self.in_flight.items() if n >= self.per_lane)
        return table.c[self.column].not_in(full) if full else None

    def within_places(self, rows: Sequence[Any]) -> list[Any]:
        """The found rows each lane has a place for, in their order; the rest stay due."""
        taken: Counter[str] = Counter()
        kept = []
        for row in rows:
            lane = str(row._mapping[self.column])
            if self.in_flight[lane] + taken[lane] < self.per_lane:
                taken[lane] += 1
                kept.append(row)
        return kept

    def split(self, items: Sequence[Any]) -> dict[str, list[Any]]:
        by_lane: dict[str, list[Any]] = {}
        for item in items:
            by_lane.setdefault(self.of(item), []).append(item)
        return by_lane

    def enter(self, lane: str, count: int) -> None:
        self.in_flight[lane] += count

    def leave(self, lane: str, count: int) -> None:
        self.in_flight[lane] -= count
        if self.in_flight[lane] <= 0:
            del self.in_flight[lane]


T = TypeVar("T")


class GroupCommit(Generic[T]):
    """Outcomes of lanes that return at about the same time, recorded in one transaction
    (group commit): lanes would otherwise commit one by one, where a queue without lanes
    committed a batch once. Whoever records takes everything waiting; each caller returns
    once its own outcomes are recorded, or raises what recording them raised."""

    def __init__(self, record: Callable[[list[T]], Awaitable[None]]) -> None:
        self._record = record
        self._waiting: list[tuple[list[T], asyncio.Future[None]]] = []
        self._lock = asyncio.Lock()

    async def __call__(self, outcomes: list[T]) -> None:
        recorded = asyncio.get_running_loop().create_future()
        self._waiting.append((outcomes, recorded))
        async with self._lock:
            if not recorded.done():
                group, self._waiting = self._waiting, []
                try:
                    await self._record([o for outcomes, _ in group for o in outcomes])
                except BaseException as exc:
                    for _, future in group:
                        if future is not recorded and not future.done():
                            future.set_exception(exc)
                    raise
                for _, future in group:
                    if not future.done():
                        future.set_result(None)
                return
        await recorded
