"""An event Kafka will never take is set aside, not retried forever: the dossiers behind it
go on, and operators see it with its reason and can replay it (issue E, item 1)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import httpx
from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import create_async_engine

from core.outbox import outbox_table
from devstack.stack import Stack
from tests.conftest import TOPIC
from tests.support.flows import (
    DESK,
    as_agency,
    as_operator,
    chain_dossier,
    eventually,
    submit,
    wait_completed,
)

# Past the broker's default max.message.bytes (1 MiB) and the producer's request limit.
TOO_LARGE = 2 * 1024 * 1024


async def stage_oversized_event(database_url: str, subject: str) -> None:
    """What intake's outbox held when a 1 MiB dossier was accepted: a row Kafka refuses."""
    engine = create_async_engine(database_url)
    table = outbox_table(MetaData(), "intake")
    try:
        async with engine.begin() as conn:
            await conn.execute(
                table.insert().values(
                    topic=TOPIC,
                    key=subject.encode(),
                    value=b"x" * TOO_LARGE,
                    headers={
                        "ce_specversion": "1.0",
                        "ce_id": str(uuid.uuid4()),
                        "ce_type": "vn.gov.dossier.submitted.v1",
                        "ce_source": "/gateway/intake",
                        "ce_subject": subject,
                    },
                    trace={},
                    created_at=datetime.now(UTC),
                )
            )
    finally:
        await engine.dispose()


def dead_events(stack: Stack, subject: str) -> list[dict[str, object]]:
    response = httpx.get(
        stack.url("intake") + "/v1/dead-letters/events", headers=as_operator(stack), timeout=10
    )
    assert response.status_code == 200, response.text
    return [e for e in response.json() if e["dossier_code"] == subject]


def test_an_event_kafka_refuses_is_dead_lettered_and_the_queue_goes_on(
    stack: Stack, database_url: str
) -> None:
    subject = f"oversized-{uuid.uuid4().hex[:8]}"
    asyncio.run(stage_oversized_event(database_url, subject))

    # Staged behind the oversized row: before, the relay retried that row about once a
    # second forever and this dossier never left intake.
    code = submit(stack, chain_dossier("behind-poison@example.vn"))
    assert wait_completed(stack, code)["status"] == "completed"

    [dead] = eventually(lambda: dead_events(stack, subject) or None, timeout=30)
    assert dead["size_bytes"] == TOO_LARGE
    assert "MessageSizeTooLarge" in str(dead["reason"])

    # The operator's replay hands it back to the relay, which tries it again: still too
    # large for this broker, so it is set aside again, with a new time.
    replayed = httpx.post(
        stack.url("intake") + f"/v1/dead-letters/events/{dead['id']}/replay",
        headers=as_operator(stack),
        timeout=10,
    )
    assert replayed.status_code == 200, replayed.text
    again = eventually(
        lambda: (
            [
                e
                for e in dead_events(stack, subject)
                if e["dead_lettered_at"]
                and str(e["dead_lettered_at"]) > str(dead["dead_lettered_at"])
            ]
            or None
        ),
        timeout=30,
    )
    assert again[0]["id"] == dead["id"]


def test_dead_events_are_for_operators_only(stack: Stack) -> None:
    for service in ("intake", "routing", "notify"):
        url = stack.url(service) + "/v1/dead-letters/events"
        assert httpx.get(url, timeout=10).status_code == 401
        denied = httpx.get(url, headers=as_agency(stack, DESK), timeout=10)
        assert denied.status_code == 403
        assert denied.headers["content-type"].startswith("application/problem+json")
        assert httpx.get(url, headers=as_operator(stack), timeout=10).status_code == 200
