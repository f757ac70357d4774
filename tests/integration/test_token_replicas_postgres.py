"""Two identity replicas behind a balancer, sharing one PostgreSQL database: a client
assertion used on one is refused on the other, and failed secrets drain one bucket whichever
replica they reach (a brute-forcer alternating replicas gets no extra attempts)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from anyio.from_thread import BlockingPortal
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import delete

from core.clock import TestClock
from core.deps import install
from core.migrations import upgrade
from core.problems import install_problem_handlers
from devstack.postgres import ensure_postgres
from services.identity.deps import MIGRATIONS, IdentityDeps, compose
from services.identity.keys import SigningKeys, generate_key
from services.identity.models import failure_buckets, metadata
from services.identity.oauth import AgencyTokens
from services.identity.settings import IdentitySettings
from services.identity.token_api import router
from services.identity.token_guard import GuardLimits, SecretGuard
from services.identity.token_state import FailureBuckets, Pace, UsedAssertions
from tests.unit.test_agency_tokens import (
    AUDIENCE,
    CLIENTS,
    ISSUER,
    SECRET,
    assertion,
    with_assertion,
)

LIMITS = GuardLimits(client_failures_burst=4, address_failures_burst=1000)


class Replica:
    def __init__(self, database_url: str, tokens: AgencyTokens, stack: ExitStack) -> None:
        settings = IdentitySettings(pseudonym_key="00" * 32, database_url=database_url)
        composed = compose(settings)
        guard = SecretGuard(LIMITS, buckets=FailureBuckets(composed.sessions))
        self.deps: IdentityDeps = replace(composed, agency_tokens=tokens, secret_guard=guard)
        app = FastAPI()
        install_problem_handlers(app)
        install(app, deps=self.deps)
        app.include_router(router)
        self.http = stack.enter_context(TestClient(app, base_url=ISSUER))
        engine = composed.runtime.engine
        stack.callback(lambda: self.portal.call(engine.dispose))

    @property
    def portal(self) -> BlockingPortal:
        """The replica's event loop (the test client's), where its engine's connections live."""
        assert self.http.portal is not None, "the test client is running"
        return self.http.portal


@pytest.fixture
def replicas(database_url: str) -> Iterator[tuple[Replica, Replica]]:
    database_url = ensure_postgres("identity_replicas")  # of its own, on the session's server
    # The replicas share their signing key (TOKEN_SIGNING_KEY_FILE), so one AgencyTokens.
    keys = SigningKeys(generate_key(), grace_s=600)
    server = AgencyTokens(issuer=ISSUER, audience=AUDIENCE, clients=CLIENTS, keys=keys, ttl_s=300)
    with ExitStack() as stack:
        one, two = Replica(database_url, server, stack), Replica(database_url, server, stack)
        engine = one.deps.runtime.engine
        one.portal.call(upgrade, engine, "identity", MIGRATIONS, metadata)
        one.portal.call(_forget_failures, one.deps)
        yield one, two


async def _forget_failures(deps: IdentityDeps) -> None:
    async with deps.sessions.begin() as session:
        await session.execute(delete(failure_buckets))


def test_an_assertion_used_on_one_replica_is_refused_on_the_other(
    replicas: tuple[Replica, Replica],
) -> None:
    one, two = replicas
    once = assertion()
    assert one.http.post("/oauth2/token", data=with_assertion(once)).status_code == 200
    again = two.http.post("/oauth2/token", data=with_assertion(once))
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_client"
    # A fresh assertion is fine on either.
    assert two.http.post("/oauth2/token", data=with_assertion(assertion())).status_code == 200


def test_the_same_jti_sent_to_both_replicas_at_once_works_once(
    replicas: tuple[Replica, Replica],
) -> None:
    one, two = replicas
    jti = f"race-{id(replicas)}"

    async def use(replica: Replica) -> list[bool]:
        used: UsedAssertions = replica.deps.used_assertions
        return list(
            await asyncio.gather(*(used.use("motcua", jti, 4_102_444_800) for _ in range(5)))
        )

    # Each replica's event loop runs its own five at once, both loops at the same time.
    first = one.portal.start_task_soon(use, one)
    second = two.portal.start_task_soon(use, two)
    answers = first.result(timeout=60) + second.result(timeout=60)
    assert answers.count(True) == 1, answers


def test_failed_secrets_on_either_replica_drain_one_bucket(
    replicas: tuple[Replica, Replica],
) -> None:
    one, two = replicas
    wrong = {"grant_type": "client_credentials"}
    statuses = [
        replica.http.post("/oauth2/token", data=wrong, auth=("hotich", f"guess-{n}")).status_code
        for n, replica in enumerate([one, two, one, two, one, two])
    ]
    # A burst of 4 in all, not 4 per replica: then both refuse before hashing.
    assert statuses == [401, 401, 401, 401, 429, 429], statuses
    refused = one.http.post("/oauth2/token", data=wrong, auth=("hotich", SECRET))
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1


def test_failures_charged_at_once_on_both_replicas_are_all_counted(
    replicas: tuple[Replica, Replica],
) -> None:
    """Concurrent upserts on one bucket: none lost, and none beyond the burst reserved."""
    clock = TestClock(datetime.now(UTC))
    pace = Pace(per_min=6, burst=4)  # 10 s a failure after the burst
    key = [(f"client:race-{id(replicas)}@10.9.9.9", pace)]

    async def charge(replica: Replica) -> None:
        buckets = FailureBuckets(replica.deps.sessions, clock)
        await asyncio.gather(*(buckets.charge(key) for _ in range(10)))

    first, second = (r.portal.start_task_soon(charge, r) for r in replicas)
    first.result(timeout=60)
    second.result(timeout=60)

    async def delay(replica: Replica) -> list[float]:
        return await FailureBuckets(replica.deps.sessions, clock).delays(key)

    # Four granted (the burst), sixteen refused without reserving: free again in one interval.
    assert replicas[0].portal.call(delay, replicas[0]) == [pytest.approx(10.0)]
