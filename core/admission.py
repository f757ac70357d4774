"""Admission control: under overload a service says "come back later" at once, instead of
queueing requests until every client has timed out.

At most `http_max_in_flight` requests are served at a time; a request beyond that waits
for a place at most `http_queue_budget_s`, well inside any client's timeout, and is then
answered 503 problem+json with Retry-After. The work a service accepts is work it can
finish: nothing is half-done for a client that has already given up, memory stays bounded
by the limit, and readiness reports the service saturated so a load balancer sends the
next requests elsewhere. Health and metrics are never held back: an operator must be able
to look at a service that is drowning.

Fair shares: while every place is taken, a caller already holding its share of the places
(in flight or waiting: `max_in_flight` over the callers present) is answered 429 with
Retry-After at once instead of joining the queue. One agency system in a retry storm then
slows itself, not the others: they still find places. A caller is its credentials (the
Authorization header) at its address; an address presenting more than a few different
credentials at once counts as one caller, so inventing credentials buys no extra share.
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
OVER_SHARE = Counter(
    "gateway_http_over_share", "Requests answered 429 at once: their caller held its fair share"
)
IN_FLIGHT = Gauge("gateway_http_in_flight", "Requests being served")
# Never queued nor shed.
UNGATED = ("/health/", "/metrics")


class Admission:
    """The gate one service's requests pass; shared by the middleware and readiness."""

    # Different credentials one address may present at once before it counts as one caller.
    CALLERS_PER_ADDRESS = 16

    def __init__(self, max_in_flight: int, queue_budget_s: float, retry_after_s: int = 1):
        self._places = asyncio.Semaphore(max_in_flight)
        self.max_in_flight = max_in_flight
        self.queue_budget_s = queue_budget_s
        self.retry_after_s = retry_after_s
        self.in_flight = 0
        self._last_shed = 0.0
        # Places held (in flight or waiting) per caller, and callers per address.
        self._held: dict[tuple[str, bytes], int] = {}
        self._callers: dict[str, int] = {}

    @property
    def saturated(self) -> bool:
        """Shed a request within the last two seconds: not ready for more."""
        return time.monotonic() - self._last_shed < 2.0

    def caller(self, address: str, credentials: bytes) -> tuple[str, bytes]:
        key = (address, credentials)
        if key not in self._held and self._callers.get(address, 0) >= self.CALLERS_PER_ADDRESS:
            return (address, b"")
        return key

    async def enter(self, caller: tuple[str, bytes] = ("", b"")) -> int:
        """200 when admitted (call `leave` after), else the status to answer: 429 when the
        caller holds its share of a full service, 503 when no place came in time."""
        held = self._held.get(caller, 0)
        others = len(self._held) - (1 if held else 0)
        # Alone, a caller may queue for the budget (a burst is smoothed, then 503).
        if others and self._places.locked() and held >= self.max_in_flight // (others + 1):
            self._last_shed = time.monotonic()
            OVER_SHARE.inc()
            return 429
        self._hold(caller, +1)
        try:
            await asyncio.wait_for(self._places.acquire(), self.queue_budget_s)
        except BaseException as exc:
            self._hold(caller, -1)
            if not isinstance(exc, TimeoutError):
                raise
            self._last_shed = time.monotonic()
            SHED.inc()
            return 503
        self.in_flight += 1
        IN_FLIGHT.inc()
        return 200

    def leave(self, caller: tuple[str, bytes] = ("", b"")) -> None:
        self._hold(caller, -1)
        self.in_flight -= 1
        IN_FLIGHT.dec()
        self._places.release()

    def _hold(self, caller: tuple[str, bytes], change: int) -> None:
        held = self._held.get(caller, 0) + change
        if held > 0:
            if caller not in self._held:
                self._callers[caller[0]] = self._callers.get(caller[0], 0) + 1
            self._held[caller] = held
            return
        del self._held[caller]
        left = self._callers[caller[0]] - 1
        if left:
            self._callers[caller[0]] = left
        else:
            del self._callers[caller[0]]


class AdmissionMiddleware:
    def __init__(self, app: ASGIApp, admission: Admission) -> None:
        self.app = app
        self.admission = admission

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", ""))
        if scope["type"] != "http" or path.startswith(UNGATED):
            await self.app(scope, receive, send)
            return
        caller = self.admission.caller(_address(scope), _credentials(scope))
        status = await self.admission.enter(caller)
        if status != 200:
            await _refuse(scope, send, status, self.admission.retry_after_s)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.admission.leave(caller)


def _address(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else ""


def _credentials(scope: Scope) -> bytes:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            return bytes(value[:1024])
    return b""


async def _refuse(scope: Scope, send: Send, status: int, retry_after_s: int) -> None:
    slug, title = (
        ("too-many-requests", "Too many requests at once from this caller; try again later")
        if status == 429
        else ("service-overloaded", "Service overloaded; try again later")
    )
    await send_problem(
        scope, send, status, slug, title, headers=[(b"retry-after", str(retry_after_s).encode())]
    )
