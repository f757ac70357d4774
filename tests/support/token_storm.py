"""A token storm against identity, from processes of its own (issue F: 2,000 token requests
of valid clients at once, plus 200 with wrong secrets).

Every agency's token expiring at the same moment after an outage looks like this: each
pending callback asks for a token of its own. The valid clients' requests go out from two
processes (the load generator must not be what is measured), the wrong secrets from a
third, from another loopback address. Prints a JSON summary per kind: statuses, latency
percentiles, and how many 429/503 lacked Retry-After.

    python -m tests.support.token_storm URL CREDENTIALS_JSON --valid 2000 --wrong 200
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import secrets
import time
from collections import Counter
from typing import Any

import aiohttp

FORM = {"grant_type": "client_credentials"}
Answer = tuple[int, float, bool]  # status (0: no answer), seconds, Retry-After present


def _storm(url: str, logins: list[tuple[str, str]], count: int, address: str) -> list[Answer]:
    async def run() -> list[Answer]:
        connector = aiohttp.TCPConnector(limit=0, force_close=True, local_addr=(address, 0))
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:

            async def one(n: int) -> Answer:
                client_id, secret = logins[n % len(logins)]
                auth = aiohttp.encode_basic_auth(client_id, secret)
                started = time.monotonic()
                try:
                    async with http.post(url, data=FORM, headers={"Authorization": auth}) as r:
                        await r.read()
                        return r.status, time.monotonic() - started, "Retry-After" in r.headers
                except (aiohttp.ClientError, TimeoutError):
                    return 0, time.monotonic() - started, False

            return list(await asyncio.gather(*(one(n) for n in range(count))))

    return asyncio.run(run())


def summary(answers: list[Answer]) -> dict[str, Any]:
    took = sorted(seconds for _, seconds, _ in answers)
    return {
        "statuses": {str(k): v for k, v in sorted(Counter(s for s, _, _ in answers).items())},
        "p50_s": round(took[len(took) // 2], 3),
        "p99_s": round(took[min(len(took) - 1, int(len(took) * 0.99))], 3),
        "max_s": round(took[-1], 3),
        "retry_after_missing": sum(1 for s, _, ra in answers if s in (429, 503) and not ra),
    }


def storm(
    url: str, valid: list[tuple[str, str]], valid_count: int, wrong_count: int
) -> dict[str, Any]:
    """Both kinds at once; valid requests split over two processes."""
    # Half guess a known client's secret, half enumerate ids; every guess is another secret.
    wrong = [
        (valid[0][0] if n % 2 else f"guess-{n}", secrets.token_urlsafe(12))
        for n in range(wrong_count)
    ]
    halves = (valid_count // 2, valid_count - valid_count // 2)
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        jobs = [pool.apply_async(_storm, (url, valid, n, "127.0.0.1")) for n in halves]
        attack = pool.apply_async(_storm, (url, wrong, wrong_count, "127.0.0.5"))
        valid_answers = [a for job in jobs for a in job.get(120)]
        wrong_answers = attack.get(120)
    return {"valid": summary(valid_answers), "wrong": summary(wrong_answers)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("credentials", help="agency_clients.json of the stack")
    parser.add_argument("--valid", type=int, default=2000)
    parser.add_argument("--wrong", type=int, default=200)
    args = parser.parse_args()
    with open(args.credentials) as file:
        clients = json.load(file)
    valid = [(c["client_id"], c["secret"]) for c in clients.values()]
    print(json.dumps(storm(args.url, valid, args.valid, args.wrong)))


if __name__ == "__main__":
    main()
