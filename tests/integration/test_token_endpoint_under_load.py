"""Identity's token endpoint under attack and under storm, on the real stack.

Attackers come from other loopback addresses (127.0.0.2 and up: still this machine), so
per-address limits meet them and not the stack's own services on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Sequence

import httpx
import psutil

from devstack.stack import REPO, Stack
from tests.support.token_storm import storm

FORM = {"grant_type": "client_credentials"}
# The client whose secret the flood guesses (locked out for a minute or two: no other test
# uses it); the valid client is another one, from the services' address.
ATTACKED = "hdkt-tanphong"
AGENCY_CLIENTS = (
    "motcua-h22",
    "hotich-tanphong",
    "congan-tanphong",
    "bhxh-tanphong",
    "soldtbxh-h22",
)


def from_address(address: str, connections: int) -> httpx.AsyncClient:
    transport = httpx.AsyncHTTPTransport(
        local_address=address,
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=0),
    )
    return httpx.AsyncClient(transport=transport, timeout=60)


def hashes_done(stack: Stack) -> float:
    """identity_token_secret_checks_total{outcome="hashed"}: scrypt hashes run so far."""
    metrics = httpx.get(stack.url("identity") + "/metrics/", timeout=10).text
    found = re.search(r'identity_token_secret_checks_total\{outcome="hashed"\} (\S+)', metrics)
    assert found, "identity does not count its secret hashes"
    return float(found.group(1))


async def wrong_secrets(
    stack: Stack, address: str, count: int, client_ids: Sequence[str] | None = None
) -> list[httpx.Response]:
    url = stack.url("identity") + "/oauth2/token"
    async with from_address(address, count) as client:
        return list(
            await asyncio.gather(
                *(
                    client.post(
                        url,
                        data=FORM,
                        auth=(
                            client_ids[n % len(client_ids)]
                            if client_ids
                            else f"guess-{address}-{n}",
                            secrets.token_urlsafe(12),
                        ),
                    )
                    for n in range(count)
                )
            )
        )


def assert_refused_politely(response: httpx.Response) -> None:
    assert response.status_code in (401, 429, 503), response.text
    if response.status_code != 401:
        assert int(response.headers["retry-after"]) >= 1
        assert response.headers["content-type"] == "application/problem+json"


def test_a_valid_client_gets_its_token_while_200_wrong_secrets_are_in_flight(
    stack: Stack,
) -> None:
    url = stack.url("identity") + "/oauth2/token"
    attacker = subprocess.Popen(
        [
            *(sys.executable, "-m", "tests.support.flood", url, "--address", "127.0.0.2"),
            *("--concurrency", "200", "--seconds", "6", "--max-requests", "20000"),
            *("--client-id", ATTACKED),
        ],
        stdout=subprocess.PIPE,
        cwd=REPO,
    )
    try:
        time.sleep(2.0)  # the flood is under way: 200 requests outstanding at all times
        assert attacker.poll() is None
        client = stack.credentials.clients["soldtbxh-h22"]
        waits = []
        for _ in range(3):
            started = time.monotonic()
            answer = httpx.post(url, data=FORM, auth=(client.client_id, client.secret), timeout=30)
            waits.append(time.monotonic() - started)
            assert answer.status_code == 200, answer.text
        out, _ = attacker.communicate(timeout=60)
    finally:
        attacker.kill()
    summary = json.loads(out)
    print(f"valid client waited {[round(w, 3) for w in waits]} s; flood: {summary}")
    assert attacker.returncode == 0
    # The first wait includes the one hash of this client's secret; later ones hit the cache.
    assert max(waits) < 2.0, f"the valid client waited {waits}"
    statuses = summary["statuses"]
    # Refused: wrong (401), throttled (429), or shed when hashing lags on a busy machine
    # (503); never a connection error or a 5xx without Retry-After.
    assert set(statuses) <= {"401", "429", "503"}, summary
    # A burst of failures is allowed, then the address is throttled before any hashing.
    assert statuses["429"] >= 10 * statuses.get("401", 0), summary
    assert summary["retry_after_missing"] == 0


async def test_unknown_and_known_client_ids_cost_the_same_hash(stack: Stack) -> None:
    url = stack.url("identity") + "/oauth2/token"
    async with from_address("127.0.0.3", 2) as http:
        before = hashes_done(stack)
        known = await http.post(url, data=FORM, auth=("congan-tanphong", "not-the-secret"))
        after_known = hashes_done(stack)
        unknown = await http.post(url, data=FORM, auth=("no-such-client", "not-the-secret"))
        after_unknown = hashes_done(stack)
    assert after_known - before == 1
    assert after_unknown - after_known == 1
    assert known.status_code == unknown.status_code == 401
    assert known.json() == unknown.json()


def test_a_token_storm_is_answered_within_bounds_and_costs_few_hashes(stack: Stack) -> None:
    """Issue F's storm: 2,000 token requests of valid clients at once (every agency's token
    expired together) plus 200 wrong secrets, from load generators in processes of their
    own. Each valid request gets a token or is told when to come back; none waits out its
    client; secrets are hashed once per client; and the endpoint is normal right after."""
    identity = psutil.Process(stack.processes["identity"].pid)
    memory_before = identity.memory_info().rss
    url = stack.url("identity") + "/oauth2/token"
    valid = [stack.credentials.clients[c] for c in AGENCY_CLIENTS]
    hashed_before = hashes_done(stack)
    logins = [(c.client_id, c.secret) for c in valid]

    figures = storm(url, logins, valid_count=2000, wrong_count=200)

    print(f"token storm: {figures}")
    answered, attack = figures["valid"], figures["wrong"]
    # A token, 429 (this client holds its share of a full endpoint) or 503 (no place in
    # time): never a 5xx without Retry-After, never a connection left unanswered.
    assert set(answered["statuses"]) <= {"200", "429", "503"}, answered
    assert answered["retry_after_missing"] == 0
    assert int(answered["statuses"].get("200", 0)) >= len(valid), answered
    assert answered["max_s"] < 30, answered
    assert set(attack["statuses"]) <= {"401", "429", "503"}, attack
    assert attack["retry_after_missing"] == 0
    # Each valid client's secret is hashed at most once (cache, single flight); the
    # attacker gets its failure bursts (10 per address, 20 per client id) and its hashes
    # in flight (8), then 429s. Without the guard this was one hash per request: 2,200.
    hashed = hashes_done(stack) - hashed_before
    print(f"token storm: {hashed:.0f} hashes")
    assert hashed <= len(valid) + 20 + 8 + 5
    # And right after, the endpoint answers as usual.
    client = valid[0]
    after = httpx.post(url, data=FORM, auth=(client.client_id, client.secret), timeout=10)
    assert after.status_code == 200, after.text
    grown = identity.memory_info().rss - memory_before
    print(f"token storm: identity grew {grown / 2**20:.1f} MiB")
    assert grown < 150 * 2**20


async def test_readiness_says_503_while_token_requests_are_shed(stack: Stack) -> None:
    """120 wrong secrets at once from 30 addresses, each within its own limits, overflow
    the hashing queue (2 threads, 64 waiting): the rest is shed and readiness says so."""
    ready_url = stack.url("identity") + "/health/ready"
    fresh = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_keepalive_connections=0))
    async with httpx.AsyncClient(transport=fresh, timeout=10) as http:
        # Ready to begin with (a test just before may have had requests shed).
        deadline = time.monotonic() + 30
        while (await http.get(ready_url)).status_code != 200:
            assert time.monotonic() < deadline, "identity is not ready to begin with"
            await asyncio.sleep(0.5)
        floods = [wrong_secrets(stack, f"127.0.0.{20 + n}", 4) for n in range(30)]
        flood = asyncio.gather(*floods)
        readiness: list[httpx.Response] = []
        deadline = time.monotonic() + 60
        while not flood.done() and time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):  # no answer: not a 503 either
                readiness.append(await http.get(ready_url))
            await asyncio.sleep(0.1)
        answers = [r for batch in await asyncio.wait_for(flood, 60) for r in batch]
        readiness.append(await http.get(ready_url))
        shed = [r for r in answers if r.status_code == 503]
        assert shed, [r.status_code for r in answers]
        for response in answers:
            assert_refused_politely(response)
        not_ready = [r for r in readiness if r.status_code == 503]
        assert not_ready, [r.status_code for r in readiness]
        assert not_ready[0].json()["checks"]["token-endpoint"].startswith("unavailable")
        # Ready again once nothing is shed any more.
        deadline = time.monotonic() + 30
        while (await http.get(ready_url)).status_code != 200:
            assert time.monotonic() < deadline, "identity did not become ready again"
            await asyncio.sleep(0.5)
