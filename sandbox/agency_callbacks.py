"""How a demo agency tells the gateway: one owed callback (acknowledgement or outcome) POSTed
until the gateway answers, in the trace of the delivery it answers (sandbox/telemetry.py).
"""

from __future__ import annotations

import asyncio
import logging
import random

import aiohttp
from opentelemetry import context as otel_context
from opentelemetry.instrumentation.aiohttp_client import create_trace_config
from opentelemetry.propagate import extract

from sandbox.agency_ledger import Owed
from sandbox.agency_tokens import AgencyTokens, TokenRefused
from sandbox.telemetry import callback_tracer_provider

log = logging.getLogger("sandbox.agency")

FIRST_RETRY_S = 0.2
# Capped, and each wait drawn between half and all of it: thousands of callbacks owed after
# an outage must not come back in step and flood the gateway again.
MAX_RETRY_S = 30.0
# Bounds one callback attempt so a hung gateway cannot stall the retry schedule.
ATTEMPT_TIMEOUT_S = 5.0
# Answers that say "not now" rather than "no": a client asks again (after Retry-After).
NOT_NOW = frozenset({408, 425, 429})


def retry_after_s(value: str | None) -> float:
    """Seconds of a Retry-After header (the gateway sends delta-seconds), capped."""
    try:
        return min(max(float(value or 0), 0.0), 2 * MAX_RETRY_S)
    except ValueError:
        return 0.0


class AgencyCallbacks:
    def __init__(self, tokens: AgencyTokens, timeout_s: float) -> None:
        self._tokens = tokens
        self._timeout_s = timeout_s
        self._client: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._client is None:
            # The OTel instrumentation makes each attempt a client span and sends its
            # traceparent. A session of its own: token requests belong to no dossier.
            # trust_env=False (the default): a proxy from the environment must not swallow
            # loopback callbacks.
            tracing = create_trace_config(tracer_provider=callback_tracer_provider())
            self._client = aiohttp.ClientSession(trace_configs=[tracing])
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def send(self, who: str, callback: Owed) -> bool:
        """POST to the gateway until it answers 2xx (True) or 4xx, or time runs out."""
        what, url = callback.what, callback.url
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout_s
        # The same key on every attempt lets the gateway drop a retry it already applied.
        headers = {"Idempotency-Key": callback.transfer_id}
        agency_code = callback.agency_code
        wait = FIRST_RETRY_S
        attempt = 0
        while True:
            attempt, retry_after = attempt + 1, 0.0
            timeout = max(0.1, min(ATTEMPT_TIMEOUT_S, deadline - loop.time()))
            try:
                headers |= await self._tokens.authorization(agency_code)
                status, text, retry_after = await self._post(callback, headers, timeout_s=timeout)
            except aiohttp.InvalidURL as exc:
                log.error("transfer %s: cannot call back %s: %s", who, url, exc)
                return False
            except (aiohttp.ClientError, TimeoutError, TokenRefused) as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if 200 <= status < 300:
                    log.info("transfer %s: %s sent (attempt %d)", who, what, attempt)
                    return True
                if status == 401 and attempt == 1:
                    # Our cached token may predate a key rotation: one more try with a new one.
                    self._tokens.forget(agency_code)
                elif status < 500 and status not in NOT_NOW:
                    # A 4xx will not change by asking again; the gateway refused this call.
                    log.warning("transfer %s: %s refused with %d %s", who, what, status, text)
                    return False
                problem = f"HTTP {status}"
            if loop.time() + wait > deadline:
                log.error(
                    "transfer %s: %s gave up after %d attempts: %s", who, what, attempt, problem
                )
                return False
            log.debug(
                "transfer %s: %s attempt %d failed (%s), retry in %.1f s",
                who,
                what,
                attempt,
                problem,
                wait,
            )
            # A gateway shedding load (429/503) says how long to wait: never less than that.
            await asyncio.sleep(max(wait * random.uniform(0.5, 1.0), retry_after))
            wait = min(wait * 2, MAX_RETRY_S)

    async def _post(
        self, callback: Owed, headers: dict[str, str], *, timeout_s: float
    ) -> tuple[int, str, float]:
        """The status, the start of the answer, and the Retry-After it asked for."""
        # Within the delivery's context, so the instrumentation's client span is its child.
        # The task is this callback's own: nothing else runs in the context meanwhile.
        token = otel_context.attach(extract(callback.trace))
        try:
            async with self._http().post(
                callback.url,
                json=callback.payload,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout_s),
            ) as response:
                text = (await response.text())[:200]
                return response.status, text, retry_after_s(response.headers.get("Retry-After"))
        finally:
            otel_context.detach(token)
