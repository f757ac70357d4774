"""The catalogue as intake and notify hold it, from routing's CatalogueService (stood in):
the gate opens with the first version, a new version replaces the current one on refresh,
and the versions seen stay at hand (bounded), older ones fetched from routing on demand."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from core.catalogue import Catalogue
from core.catalogue_client import CatalogueClient, CatalogueUnavailable, catalogue_of
from tests.support.catalogue_server import StandInCatalogue

CHAIN = "LT.KS-TT-BHYT"


@pytest.fixture
def routing() -> Iterator[StandInCatalogue]:
    server = StandInCatalogue()
    server.start()
    yield server
    server.stop()


def renamed(catalogue: Catalogue, code: str, name: str) -> Catalogue:
    """The catalogue with one procedure renamed and its last step removed."""
    procedure = catalogue.procedures[code]
    changed = replace(procedure, name=name, steps=procedure.steps[:-1])
    return replace(catalogue, procedures={**catalogue.procedures, code: changed})


async def test_the_first_version_opens_the_gate_and_a_new_one_replaces_it(
    routing: StandInCatalogue,
) -> None:
    client = CatalogueClient(routing.target, 2.0, None, refresh_s=0.05)
    worker = asyncio.create_task(client.run())
    try:
        await asyncio.wait_for(client.ready.wait(), 10)
        assert client.version == 1
        first = client.current().catalogue
        chain = client.catalogue.procedure(CHAIN)
        assert chain is not None
        assert len(chain.steps) == 3
        assert chain.needs == ()
        assert chain.min_assurance == 1
        marital = client.catalogue.procedure("HT.XNTTHN")
        assert marital is not None
        assert (marital.needs, marital.min_assurance) == (("residence",), 2)

        version = routing.publish(renamed(catalogue_of(routing.versions[1]), CHAIN, "Mới"))
        for _ in range(200):
            if client.version == version:
                break
            await asyncio.sleep(0.02)
        assert client.version == version == 2
        current = client.catalogue.procedure(CHAIN)
        assert current is not None
        assert (current.name, len(current.steps)) == ("Mới", 2)
        # The version a dossier was received under is still at hand, as it was.
        assert await client.at(1) is first
        old = (await client.at(1)).procedure(CHAIN)
        assert old is not None
        assert len(old.steps) == 3
        # Version 0 (before versions were recorded) is the current one.
        assert (await client.at(0)).procedure(CHAIN) == current
    finally:
        worker.cancel()
        await client.close()


async def test_versions_not_seen_are_fetched_once_and_the_cache_is_bounded(
    routing: StandInCatalogue,
) -> None:
    base = catalogue_of(routing.versions[1])
    for n in range(2, 6):
        routing.publish(renamed(base, CHAIN, f"Tên {n}"))
    client = CatalogueClient(routing.target, 2.0, None, keep=2)
    try:
        await client.refresh()
        assert client.version == 5
        routing.asked.clear()
        two = (await client.at(2)).procedure(CHAIN)
        assert two is not None
        assert two.name == "Tên 2"
        await client.at(2)
        assert routing.asked == [2]  # remembered after the first time
        await client.at(3)  # keep=2: version 5 (oldest used) goes, 2 and 3 stay
        await client.at(2)
        assert routing.asked == [2, 3]
        await client.at(4)  # 3 goes now
        await client.at(3)
        assert routing.asked == [2, 3, 4, 3]
        # A version routing never had: the current one, and no error for the caller.
        missing = (await client.at(99)).procedure(CHAIN)
        assert missing is not None
        assert missing.name == "Tên 5"
    finally:
        await client.close()


async def test_routing_away_is_a_transient_failure_and_the_gate_stays_closed() -> None:
    client = CatalogueClient("127.0.0.1:1", 0.5, None)
    try:
        with pytest.raises(CatalogueUnavailable):
            await client.refresh()
        assert not client.ready.is_set()
        assert client.catalogue.procedures == {}
        # A ConnectionError: core/retry.py waits it out at start.
        assert isinstance(CatalogueUnavailable(), ConnectionError)
    finally:
        await client.close()


def test_only_routing_reads_the_catalogue_files() -> None:
    readers = ("load_catalogue", "parse_catalogue", "catalogue_digest", "DEFAULT_DIR")
    root = Path(__file__).resolve().parents[2] / "services"
    for service in ("intake", "notify", "identity"):
        # Identity reads its agency clients (catalogue/agency_clients.yaml), not procedures.
        reader = readers[:3] if service == "identity" else readers
        for source in (root / service).rglob("*.py"):
            text = source.read_text(encoding="utf-8")
            assert not [r for r in reader if r in text], f"{source} reads catalogue/*.yaml"
