"""Client of an HTTP SMS gateway: one message per call, its outcome classified for retrying.

The notification id travels as the gateway's `reference`, so a resend after a crash
mid-send (the lease ran out before the status was recorded) is recognised by the gateway
and bills no second SMS. Outcomes use the notification status vocabulary, so the sender
can record them as they are: 429, 5xx, connection errors and timeouts are temporary
(retried with backoff, as for SMTP 4xx); 401 and 403 are our own misconfiguration (a
wrong or revoked API key: technical failure, for an operator to fix); any other 4xx is a
refusal that asking again will not change.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import TracebackType
from typing import Literal

import aiohttp
from opentelemetry.instrumentation.aiohttp_client import create_trace_config

SmsStatus = Literal["delivered", "temporary-failure", "permanent-failure", "technical-failure"]

# Enough of a gateway's error body to tell an officer why, not a whole HTML error page.
_MAX_REASON = 300


@dataclass(frozen=True)
class SmsResult:
    status: SmsStatus
    # The gateway's message id, when it accepted the message.
    provider_id: str | None = None
    reason: str | None = None
    # From a 429's or 503's Retry-After, when the gateway said when to come back.
    retry_after_s: float | None = None

    @property
    def delivered(self) -> bool:
        return self.status == "delivered"


class SmsGateway:
    """`async with SmsGateway(url, key) as sms: await sms.send(...)`, or start()/close().

    "delivered" means the gateway accepted the message (2xx). Handset delivery receipts,
    when a gateway offers them, would come later by callback.
    """

    def __init__(self, url: str, api_key: str, *, timeout_s: float = 10.0) -> None:
        if not url:
            raise ValueError("the SMS gateway URL is required")
        if not api_key:
            raise ValueError("the SMS gateway API key is required")
        self._url = url
        self._api_key = api_key
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        # Created here, not in __init__: a ClientSession belongs to the running event loop.
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                headers={"X-Api-Key": self._api_key},
                trace_configs=[create_trace_config()],
            )

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def __aenter__(self) -> SmsGateway:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def send(self, to_e164: str, text: str, reference: str) -> SmsResult:
        """Hand one message to the gateway; never raises for what the gateway or network do."""
        if self._session is None:
            raise RuntimeError("SmsGateway.send before start()")
        payload = {"to": to_e164, "text": text, "reference": reference}
        try:
            async with self._session.post(self._url, json=payload) as response:
                status = response.status
                retry_after = _seconds(response.headers.get("Retry-After"))
                if 200 <= status < 300:
                    provider_id = await _provider_id(response)
                    return SmsResult("delivered", provider_id=provider_id)
                body = (await response.text(errors="replace"))[:_MAX_REASON]
        except (aiohttp.ClientError, TimeoutError) as exc:
            # TimeoutError's message is empty; the type alone says what happened.
            detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            return SmsResult("temporary-failure", reason=detail)
        reason = f"HTTP {status}: {body}" if body else f"HTTP {status}"
        if status == 429 or status >= 500:
            return SmsResult("temporary-failure", reason=reason, retry_after_s=retry_after)
        if status in (401, 403):
            return SmsResult("technical-failure", reason=reason)
        return SmsResult("permanent-failure", reason=reason)


async def _provider_id(response: aiohttp.ClientResponse) -> str | None:
    # The message is accepted whatever the body says; an id is only for tracing it later.
    try:
        body = await response.json(content_type=None)
    except ValueError:
        return None
    value = body.get("id") if isinstance(body, dict) else None
    return str(value) if value is not None else None


def _seconds(header: str | None) -> float | None:
    # Only the delta-seconds form: gateways do not send HTTP dates here in practice.
    if header is None:
        return None
    try:
        value = float(header)
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None
