"""Scale-out (issue J), the short form of `make replicas`: two replicas each of intake,
identity, routing and notify on one PostgreSQL database, over a three-broker Kafka cluster
(replication 3, min.insync.replicas 2), take a stream of dossiers while the first replica
of each service and one broker are SIGKILLed in turn (each started again later, to rejoin).
The other replicas and brokers carry on: every accepted dossier completes exactly once,
no agency or citizen hears of anything twice, nothing is lost or dead-lettered."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from devstack.chaos import REPLICA_VICTIMS, Plan, run_chaos

pytestmark = pytest.mark.integration


def test_replicas_carry_on_when_one_of_each_and_a_broker_is_killed(tmp_path: Path) -> None:
    plan = Plan(
        dossiers=150,
        rate=2.5,
        database="postgres",
        # Long enough for the clients, the gRPC channels and the consumer groups to find
        # that the first replica is gone and carry on with the second.
        down_s=8.0,
        settle_s=300,
        replicas=2,
        brokers=3,
        victims=REPLICA_VICTIMS,
    )
    started = time.monotonic()
    census = asyncio.run(run_chaos(plan, tmp_path))
    print("\n".join(census.lines()))
    print(f"run time {time.monotonic() - started:.0f} s")
    assert len(census.kills) == 2 * len(REPLICA_VICTIMS), census.kills  # each killed, back
    assert census.accepted == plan.dossiers, (census.refused, census.unanswered)
    assert census.ok, "\n".join(census.lines())
    assert census.dead_letters == {}
    assert census.taken["transfers"] >= census.accepted * 2
    # The second replicas, never killed, took their share all along.
    for name in ("intake-2", "routing-2", "notify-2"):
        assert census.work.get(name, 0) > 0, census.work
