"""A wrong-secret flood against identity's token endpoint, in its own process.

Run by the load tests so that the attacker's client work does not share the test's event
loop (or GIL) with the legitimate client being timed. Bounded in time and in count; keeps
`concurrency` requests outstanding; prints a JSON summary: statuses and whether every
429/503 carried Retry-After.

    python -m tests.support.flood URL --address 127.0.0.2 --concurrency 200 --seconds 5 \
        --client-id hdkt-tanphong

With --client-id, every other request guesses that (known) client's secret, the others
use unknown ids: both the guessing and the enumerating attacker.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import time
from collections import Counter
from urllib.parse import urlsplit

import httpx


async def flood(
    url: str, address: str, concurrency: int, seconds: float, max_requests: int, client_id: str
) -> dict[str, object]:
    assert urlsplit(url).hostname == "127.0.0.1", "only this machine"
    # HTTP statuses, or the name of the error where no answer came (a test says which).
    statuses: Counter[int | str] = Counter()
    retry_after_missing = 0
    sent = 0
    deadline = time.monotonic() + seconds
    transport = httpx.AsyncHTTPTransport(
        local_address=address,
        limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
    )
    async with httpx.AsyncClient(transport=transport, timeout=30) as client:

        async def attacker(n: int) -> None:
            nonlocal sent, retry_after_missing
            while time.monotonic() < deadline and sent < max_requests:
                sent += 1
                form = {"grant_type": "client_credentials"}
                unknown = f"guess-{address}-{n}-{sent}"
                who = client_id if client_id and n % 2 == 0 else unknown
                auth = (who, secrets.token_urlsafe(12))
                try:
                    answer = await client.post(url, data=form, auth=auth)
                except httpx.HTTPError as exc:
                    statuses[type(exc).__name__] += 1
                    continue
                statuses[answer.status_code] += 1
                if answer.status_code in (429, 503) and "retry-after" not in answer.headers:
                    retry_after_missing += 1

        await asyncio.gather(*(attacker(n) for n in range(concurrency)))
    return {
        "statuses": {str(k): v for k, v in statuses.items()},
        "retry_after_missing": retry_after_missing,
        "sent": sent,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--address", default="127.0.0.2")
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--max-requests", type=int, default=5000)
    parser.add_argument("--client-id", default="")
    args = parser.parse_args()
    summary = asyncio.run(
        flood(
            args.url,
            args.address,
            args.concurrency,
            args.seconds,
            args.max_requests,
            args.client_id,
        )
    )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
