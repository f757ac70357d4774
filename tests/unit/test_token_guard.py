"""What a client secret check may cost: cache, single flight, throttles, bounded pool."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from core.storage import create_engine, create_tables, session_factory
from services.identity.clients import hash_secret
from services.identity.models import metadata
from services.identity.token_guard import CheckRefused, ClientGone, GuardLimits, SecretGuard
from services.identity.token_state import FailureBuckets

STORED = hash_secret("the-secret")


class Hashes:
    """A stand-in for scrypt that counts calls and can be held until released."""

    def __init__(self, hold: bool = False) -> None:
        self.calls: list[str] = []
        self.against: list[str] = []
        self.release = threading.Event()
        if not hold:
            self.release.set()

    def __call__(self, secret: str, stored: str) -> bool:
        self.calls.append(secret)
        self.against.append(stored)
        self.release.wait(10)
        return stored == STORED and secret == "the-secret"


@pytest.fixture
async def buckets(tmp_path: Path) -> AsyncIterator[FailureBuckets]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'identity.db'}")
    await create_tables(engine, metadata)
    yield FailureBuckets(session_factory(engine))
    await engine.dispose()


def guard(buckets: FailureBuckets, hashes: Hashes, **limits: Any) -> SecretGuard:
    return SecretGuard(GuardLimits(**limits), buckets=buckets, matches=hashes)


async def test_a_verified_secret_is_remembered_until_the_stored_hash_changes(
    buckets: FailureBuckets,
) -> None:
    hashes = Hashes()
    checks = guard(buckets, hashes)
    assert await checks.verify("hotich", "the-secret", STORED, "10.0.0.1")
    assert await checks.verify("hotich", "the-secret", STORED, "10.0.0.1")
    assert len(hashes.calls) == 1
    # Another stored hash (the secret was changed): the remembered match no longer counts.
    assert not await checks.verify("hotich", "the-secret", hash_secret("new"), "10.0.0.1")
    assert len(hashes.calls) == 2


async def test_an_unknown_id_is_hashed_like_a_known_one(buckets: FailureBuckets) -> None:
    hashes = Hashes()
    checks = guard(buckets, hashes)
    assert not await checks.verify("hotich", "guess", STORED, "10.0.0.1")
    assert not await checks.verify("nobody", "guess", None, "10.0.0.1")
    assert len(hashes.calls) == 2
    assert hashes.against[0] == STORED
    assert hashes.against[1].startswith("scrypt$")


async def test_a_burst_of_one_client_costs_one_hash(buckets: FailureBuckets) -> None:
    hashes = Hashes(hold=True)
    checks = guard(buckets, hashes)
    burst = [
        asyncio.create_task(checks.verify("hotich", "the-secret", STORED, "10.0.0.1"))
        for _ in range(50)
    ]
    await asyncio.sleep(0.1)
    hashes.release.set()
    assert all(await asyncio.gather(*burst))
    assert len(hashes.calls) == 1


async def test_failures_of_an_address_are_throttled_before_hashing(buckets: FailureBuckets) -> None:
    hashes = Hashes()
    checks = guard(buckets, hashes, address_failures_burst=3, address_failures_per_min=6)
    for n in range(3):
        assert not await checks.verify(f"client-{n}", "guess", None, "10.0.0.9")
    with pytest.raises(CheckRefused) as refused:
        await checks.verify("client-x", "guess", None, "10.0.0.9")
    assert refused.value.status == 429
    assert refused.value.retry_after >= 1
    assert len(hashes.calls) == 3
    # Another address is not concerned.
    assert not await checks.verify("client-y", "guess", None, "10.0.0.10")


async def test_failures_of_a_client_id_are_throttled_where_they_come_from(
    buckets: FailureBuckets,
) -> None:
    hashes = Hashes()
    checks = guard(buckets, hashes, client_failures_burst=2, client_failures_per_min=6)
    for n in range(2):
        assert not await checks.verify("hotich", f"guess-{n}", STORED, "10.0.1.1")
    with pytest.raises(CheckRefused):
        await checks.verify("hotich", "guess-9", STORED, "10.0.1.1")
    assert len(hashes.calls) == 2
    # Whoever knows the client id cannot lock the agency out: from its own address its
    # requests are still checked.
    assert not await checks.verify("hotich", "guess-10", STORED, "10.0.2.2")
    assert len(hashes.calls) == 3


async def test_one_address_cannot_hold_more_than_its_share_of_the_pool(
    buckets: FailureBuckets,
) -> None:
    hashes = Hashes(hold=True)
    checks = guard(buckets, hashes, address_in_flight=2)
    attempts = [
        asyncio.create_task(checks.verify(f"c{n}", f"g{n}", None, "10.0.0.7")) for n in range(6)
    ]
    await asyncio.sleep(0.1)
    hashes.release.set()
    results = await asyncio.gather(*attempts, return_exceptions=True)
    refused = [r for r in results if isinstance(r, CheckRefused)]
    assert len(refused) == 4
    assert all(r.status == 429 for r in refused)
    assert len(hashes.calls) == 2


async def test_a_full_queue_sheds_with_503_and_readiness_notices(buckets: FailureBuckets) -> None:
    hashes = Hashes(hold=True)
    checks = guard(buckets, hashes, hash_workers=1, queue_size=2)
    assert not checks.saturated()
    attempts = [
        asyncio.create_task(checks.verify(f"c{n}", "g", None, f"10.0.2.{n}")) for n in range(6)
    ]
    await asyncio.sleep(0.1)
    hashes.release.set()
    results = await asyncio.gather(*attempts, return_exceptions=True)
    shed = [r for r in results if isinstance(r, CheckRefused)]
    # One hashing, two waiting; the other three are answered at once.
    assert len(shed) == 3
    assert all(r.status == 503 and r.retry_after >= 1 for r in shed)
    assert len(hashes.calls) == 3
    assert checks.saturated()


async def test_a_check_that_waited_too_long_is_shed(buckets: FailureBuckets) -> None:
    hashes = Hashes(hold=True)
    checks = guard(buckets, hashes, hash_workers=1, queue_wait_s=0.2)
    first = asyncio.create_task(checks.verify("c1", "g", None, "10.0.3.1"))
    await asyncio.sleep(0.05)
    with pytest.raises(CheckRefused) as refused:
        await checks.verify("c2", "g", None, "10.0.3.2")
    assert refused.value.status == 503
    hashes.release.set()
    assert not await first
    assert hashes.calls == ["g"]


async def test_no_hash_for_a_client_that_has_gone(buckets: FailureBuckets) -> None:
    hashes = Hashes()
    checks = guard(buckets, hashes)

    async def gone() -> bool:
        return True

    with pytest.raises(ClientGone):
        await checks.verify("hotich", "the-secret", STORED, "10.0.0.1", gone)
    assert hashes.calls == []


async def test_joiners_of_a_check_that_ended_unanswered_share_the_next_one(
    buckets: FailureBuckets,
) -> None:
    """The first asker hung up while many joined it (the storm after a sandbox restart):
    one of the joiners hashes next, the others join that, and every joiner is answered."""
    hashes = Hashes(hold=True)
    checks = guard(buckets, hashes)
    hung_up = asyncio.Event()

    async def first_gone() -> bool:
        await hung_up.wait()
        return True

    # Another client holds both hashing threads, so the first asker waits for a slot.
    blockers = [
        asyncio.create_task(checks.verify(f"other-{n}", "x", STORED, f"10.0.1.{n}"))
        for n in range(2)
    ]
    await asyncio.sleep(0.05)
    first = asyncio.create_task(
        checks.verify("hotich", "the-secret", STORED, "10.0.0.1", first_gone)
    )
    await asyncio.sleep(0.05)
    joiners = [
        asyncio.create_task(checks.verify("hotich", "the-secret", STORED, "10.0.0.1"))
        for _ in range(20)
    ]
    await asyncio.sleep(0.05)
    hung_up.set()
    hashes.release.set()
    with pytest.raises(ClientGone):
        await first
    assert all(await asyncio.gather(*joiners))
    await asyncio.gather(*blockers)
    assert hashes.calls.count("the-secret") == 1
