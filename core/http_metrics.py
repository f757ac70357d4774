"""Requests served and their latency, per route, for Prometheus: the throughput and latency
panels of the dashboard (deploy/grafana/). One histogram observation per request; health
checks and scrapes are not counted, and a request no route matched (a probe, a refusal
before routing) counts under "unmatched" so that stray paths cannot grow the label set."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import Histogram

from core.admission import UNGATED, ASGIApp, Message, Receive, Scope, Send

REQUESTS = Histogram(
    "gateway_http_request_duration_seconds",
    "Time from a request's arrival to its response's start, by route and status",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)


class RequestMetrics:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or str(scope.get("path", "")).startswith(UNGATED):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client sees if the application fails before answering

        async def timed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                REQUESTS.labels(scope["method"], _route(scope), str(status)).observe(
                    time.perf_counter() - started
                )
            await send(message)

        await self.app(scope, receive, timed_send)


def _route(scope: Scope) -> str:
    # Starlette's router writes the matched route into the scope it was given.
    route: Any = scope.get("route")
    return str(getattr(route, "path", "unmatched"))
