"""Overload: offered far more than it can take, a service answers 503 with Retry-After at
once instead of queueing until clients time out; readiness says so; memory stays bounded;
and what clients retry with the same Idempotency-Key is all accepted and completed, once
(issue F, item 5).

The flood goes to an extra intake replica with a small admission limit (the same process
as the stack's intake, on the same database and broker), so the rest of the suite keeps its
ordinary one.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import psutil
import pytest

from devstack._process import free_ports
from devstack.stack import REPO, Stack
from tests.support.flows import DESK, agency_token, chain_dossier, eventually, wait_completed

FLOOD = 120


@pytest.fixture
def small_intake(stack: Stack) -> Iterator[tuple[str, psutil.Process]]:
    port = free_ports(1)[0]
    env = stack.service_env("intake") | {
        "HTTP_PORT": str(port),
        "HTTP_MAX_IN_FLIGHT": "4",
        "HTTP_QUEUE_BUDGET_S": "0.05",
    }
    log = (stack.var_dir / "log" / "intake-small.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "services.intake"], cwd=REPO, env=env, stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool | None:
        try:
            return httpx.get(url + "/health/ready", timeout=2).status_code == 200 or None
        except httpx.HTTPError:
            return None

    try:
        eventually(ready, timeout=60)
        yield url, psutil.Process(process.pid)
    finally:
        process.terminate()
        process.wait(15)
        log.close()


async def flood(url: str, token: str) -> tuple[list[tuple[int, float, httpx.Response]], int]:
    """FLOOD submissions at once, plus readiness polled meanwhile; the answers with their
    latency, and how often readiness said 503."""
    unready = 0
    async with httpx.AsyncClient(timeout=15) as client:

        async def submit(i: int) -> tuple[int, float, httpx.Response]:
            started = time.monotonic()
            answer = await client.post(
                url + "/v1/dossiers",
                json=chain_dossier(f"flood-{i}@example.vn"),
                headers={"Authorization": f"Bearer {token}", "Idempotency-Key": f"flood-{i}"},
            )
            return i, time.monotonic() - started, answer

        async def watch() -> None:
            nonlocal unready
            for _ in range(20):
                if (await client.get(url + "/health/ready")).status_code == 503:
                    unready += 1
                await asyncio.sleep(0.1)

        answers, _ = await asyncio.gather(
            asyncio.gather(*(submit(i) for i in range(FLOOD))), watch()
        )
    return list(answers), unready


def test_a_flood_is_shed_at_once_and_nothing_is_lost(
    stack: Stack, small_intake: tuple[str, psutil.Process]
) -> None:
    url, process = small_intake
    token = agency_token(stack, DESK)
    memory_before = process.memory_info().rss

    answers, unready = asyncio.run(flood(url, token))

    statuses = {a.status_code for _, _, a in answers}
    assert statuses <= {201, 503}, statuses
    shed = [(i, took, a) for i, took, a in answers if a.status_code == 503]
    assert shed, "a flood of 120 on 4 places sheds some"
    for _, took, answer in shed:
        assert answer.headers["retry-after"] == "1"
        assert answer.headers["content-type"] == "application/problem+json"
        # Told at once (the queue budget is 0.05 s), far inside a client's timeout.
        assert took < 5, took
    assert unready > 0, "readiness says 503 while the service sheds"
    assert process.memory_info().rss - memory_before < 150 * 1024 * 1024

    # Clients come back as told, with the same keys: everything is accepted, once.
    codes = {i: a.json()["code"] for i, _, a in answers if a.status_code == 201}
    headers = {"Authorization": f"Bearer {token}"}
    deadline = time.monotonic() + 120
    for i, _, _ in shed:
        while time.monotonic() < deadline:
            again = httpx.post(
                url + "/v1/dossiers",
                json=chain_dossier(f"flood-{i}@example.vn"),
                headers=headers | {"Idempotency-Key": f"flood-{i}"},
                timeout=15,
            )
            if again.status_code != 503:
                break
            time.sleep(1)
        assert again.status_code == 201, again.text
        codes[i] = again.json()["code"]
    assert len(set(codes.values())) == FLOOD
    # Ready again once it has shed nothing for a while.
    eventually(lambda: httpx.get(url + "/health/ready", timeout=5).status_code == 200 or None, 30)
    for code in codes.values():
        assert wait_completed(stack, code, timeout=180)["status"] == "completed"
