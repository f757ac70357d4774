"""Admission control: under overload a service says "come back later" at once, instead of
queueing requests until every client has timed out.

At most `http_max_in_flight` requests are served at a time; a request beyond that waits
for a place at most `http_queue_budget_s`, well inside any client's timeout, and is then
answered 503 problem+json with Retry-After. The work a service accepts is work it can
finish: nothing is half-done for a client that has already given up, memory stays bounded
by the limit, and readiness reports the service saturated so a load balancer sends the
next requests elsewhere. Health and metrics are never held back: an operator must be able
to look at a service that is drowning.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from prometheus_client import Counter, Gauge

from core.problems import send_problem

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SHED = Counter("gateway_http_shed", "Requests answered 503 at once because the service is full")
IN_FLIGHT = Gauge("gateway_http_in_flight", "Requests being served")
# Never queued nor shed.
UNGATED = ("/health/", "/metrics")


class Admission:
    """The gate one service's requests pass; shared by the middleware and readiness."""

    def __init__(self, max_in_flight: int, queue_budget_s: float, retry_after_s: int = 1):
        self._places = asyncio.Semaphore(max_in_flight)
        self.max_in_flight = max_in_flight
        self.queue_budget_s = queue_budget_s
        self.retry_after_s = retry_after_s
        self.in_flight = 0
        self._last_shed = 0.0

    @property
    def saturated(self) -> bool:
        """Shed a request within the last two seconds: not ready for more."""
        return time.monotonic() - self._last_shed < 2.0

    async def enter(self) -> bool:
        try:
            await asyncio.wait_for(self._places.acquire(), self.queue_budget_s)
        except TimeoutError:
            self._last_shed = time.monotonic()
            SHED.inc()
            return False
        self.in_flight += 1
        IN_FLIGHT.inc()
        return True

    def leave(self) -> None:
        self.in_flight -= 1
        IN_FLIGHT.dec()
        self._places.release()


class AdmissionMiddleware:
    def __init__(self, app: ASGIApp, admission: Admission) -> None:
        self.app = app
        self.admission = admission

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", ""))
        if scope["type"] != "http" or path.startswith(UNGATED):
            await self.app(scope, receive, send)
            return
        if not await self.admission.enter():
            await _service_full(scope, send, self.admission.retry_after_s)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.admission.leave()


async def _service_full(scope: Scope, send: Send, retry_after_s: int) -> None:
    await send_problem(
        scope,
        send,
        503,
        "service-overloaded",
        "Service overloaded; try again later",
        headers=[(b"retry-after", str(retry_after_s).encode())],
    )
