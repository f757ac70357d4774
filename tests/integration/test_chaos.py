"""The short form of `make chaos`, on SQLite and on PostgreSQL: a stream of dossiers over
three multi-agency procedures while intake, routing, notify, identity, the sandbox and the
broker are each SIGKILLed once; every accepted dossier completes exactly once, no agency
or citizen hears of anything twice, nothing is stuck or left behind (issue F)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from devstack.chaos import Plan, run_chaos


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_every_dossier_completes_once_whatever_is_killed(database: str, tmp_path: Path) -> None:
    plan = Plan(dossiers=90, rate=3.0, database=database, settle_s=240)
    census = asyncio.run(run_chaos(plan, tmp_path))
    print("\n".join(census.lines()))
    assert len(census.kills) == 12, census.kills  # six victims, each killed and back
    assert census.taken["transfers"] >= census.accepted * 2
    assert census.taken["emails"] >= census.accepted
    assert census.ok, "\n".join(census.lines())
