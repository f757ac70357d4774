"""RFC 9457 problem details for every HTTP error: clients never get HTML or a bare 500."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException
from starlette.routing import Match
from starlette.types import Scope, Send

log = logging.getLogger(__name__)
PROBLEM_JSON = "application/problem+json"


class Problem(Exception):
    """Raise from a handler to answer with a problem document.

    `slug` names the problem type; its URI is relative to the API (/problems/<slug>).
    """

    def __init__(
        self,
        status: int,
        slug: str,
        title: str,
        detail: str = "",
        *,
        headers: Mapping[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail or title)
        self.status = status
        self.slug = slug
        self.title = title
        self.detail = detail
        # e.g. WWW-Authenticate on a 401, Retry-After on a 503
        self.headers = dict(headers or {})
        self.extensions = extensions


def problem_response(
    request: Request, status: int, type_: str, title: str, detail: str = "", **extensions: Any
) -> JSONResponse:
    body: dict[str, Any] = {"type": type_, "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body["instance"] = request.url.path
    body.update(extensions)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON)


async def send_problem(
    scope: Scope,
    send: Send,
    status: int,
    slug: str,
    title: str,
    detail: str = "",
    *,
    headers: Sequence[tuple[bytes, bytes]] = (),
    **extensions: Any,
) -> None:
    """The same document as problem_response, sent by ASGI middleware before any route."""
    document: dict[str, Any] = {"type": f"/problems/{slug}", "title": title, "status": status}
    if detail:
        document["detail"] = detail
    document["instance"] = scope.get("path", "")
    document.update(extensions)
    body = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", PROBLEM_JSON.encode()),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _on_problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Problem)
    response = problem_response(
        request, exc.status, f"/problems/{exc.slug}", exc.title, exc.detail, **exc.extensions
    )
    response.headers.update(exc.headers)
    return response


async def _on_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"location": list(e.get("loc", ())), "message": e.get("msg", ""), "type": e.get("type")}
        for e in exc.errors()
    ]
    return problem_response(
        request,
        422,
        "/problems/validation-error",
        "The request is not valid",
        f"{len(errors)} field(s) failed validation",
        errors=errors,
    )


async def _on_http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    response = problem_response(request, exc.status_code, "about:blank", str(exc.detail))
    response.headers.update(exc.headers or {})
    if exc.status_code == 405:
        # RFC 9110 §15.5.6: every method the path takes. Starlette names those of the first
        # route that matched the path only, and a path may have a route per method.
        response.headers["Allow"] = ", ".join(sorted(_allowed_methods(request)))
    return response


def _allowed_methods(request: Request) -> set[str]:
    allowed: set[str] = set()
    for route in iter_route_contexts(request.app.routes):
        match, _ = route.matches(request.scope)
        if match != Match.NONE:
            allowed |= set(getattr(route, "methods", None) or ())
    return allowed


async def _on_unavailable(request: Request, exc: Exception) -> JSONResponse:
    # The database is away: a client may retry; this is not a fault in its request.
    log.warning("database unavailable on %s %s: %r", request.method, request.url.path, exc)
    response = problem_response(
        request, 503, "/problems/service-unavailable", "Service temporarily unavailable"
    )
    response.headers["Retry-After"] = "5"
    return response


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem_response(request, 500, "about:blank", "Internal Server Error")


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(Problem, _on_problem)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(HTTPException, _on_http)
    app.add_exception_handler(OperationalError, _on_unavailable)
    app.add_exception_handler(InterfaceError, _on_unavailable)
    # Every pooled connection busy: overloaded, so the client is told to come back.
    app.add_exception_handler(PoolTimeout, _on_unavailable)
    app.add_exception_handler(Exception, _on_unexpected)
