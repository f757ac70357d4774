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
  closing intake to the others; `total` bounds the rows in flight altogether.

The counts are this process's: each replica gives a lane `per_lane` places.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

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
